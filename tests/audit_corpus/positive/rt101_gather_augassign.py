# expect: RT101
# A list grown with += in a loop.
import asyncio


async def score(candidate):
    return candidate


async def rank(candidates):
    pending = []
    for candidate in candidates:
        pending += [score(candidate)]
    return await asyncio.gather(*pending)
