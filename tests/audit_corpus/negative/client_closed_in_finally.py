# expect: none
# Closed in a finally block.
import httpx


async def fetch(url):
    client = httpx.AsyncClient()
    try:
        return (await client.get(url)).text
    finally:
        await client.aclose()
