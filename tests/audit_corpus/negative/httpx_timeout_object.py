# expect: none
# A Timeout with a read limit and a connect limit.
import httpx

client = httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0))
