# expect: RT101
# A crawler fetching every URL of a sitemap at once.
import asyncio

import httpx


async def fetch(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(url)
    return response.text


async def crawl(urls: list[str]) -> list[str]:
    async with httpx.AsyncClient() as client:
        return await asyncio.gather(*(fetch(client, url) for url in urls))
