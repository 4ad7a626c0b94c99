# expect: none
# An async fixture yields the client and closes it.
import httpx


async def client():
    c = httpx.AsyncClient()
    yield c
    await c.aclose()
