# expect: none
# redis.asyncio is async.
from redis import asyncio as aioredis


async def remember(key, value):
    cache = aioredis.Redis(host="localhost")
    try:
        await cache.set(key, value)
    finally:
        await cache.aclose()
