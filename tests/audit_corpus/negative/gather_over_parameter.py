# expect: none
# gather over a caller's list: nothing here says how it was made.
import asyncio


async def run_all(coroutines):
    return await asyncio.gather(*coroutines)
