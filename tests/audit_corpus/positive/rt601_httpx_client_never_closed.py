# expect: RT601
# An httpx client per request, never closed.
import httpx


async def get_status(url):
    client = httpx.AsyncClient(base_url=url)
    response = await client.get("/status")
    return response.json()
