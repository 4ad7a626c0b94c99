# expect: none
# Anthropic with an httpx.Timeout.
import anthropic
import httpx

client = anthropic.AsyncAnthropic(timeout=httpx.Timeout(30.0, connect=5.0))
