# expect: none
# The client belongs to the object, which closes it.
import httpx


class Api:
    def __init__(self, base_url):
        self.client = httpx.AsyncClient(base_url=base_url)

    async def aclose(self):
        await self.client.aclose()
