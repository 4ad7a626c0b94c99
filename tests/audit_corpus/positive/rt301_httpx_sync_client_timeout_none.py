# expect: RT301
# A sync client made once with no timeout.
import httpx

client = httpx.Client(timeout=None)
