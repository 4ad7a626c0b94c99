# expect: none
# A comprehension over a literal tuple of three services.
import asyncio


async def check(name):
    return name


async def health():
    return await asyncio.gather(*(check(name) for name in ("db", "cache", "queue")))
