# expect: RT101
# One request per page of a paginated API.
import asyncio


async def fetch_page(session, number):
    async with session.get(f"/items?page={number}") as response:
        return await response.json()


async def fetch_catalogue(session, total_pages):
    return await asyncio.gather(*(fetch_page(session, n) for n in range(1, total_pages + 1)))
