# expect: RT801
# The blocking redis client in a coroutine.
import redis


async def remember(key, value):
    cache = redis.Redis(host="localhost")
    cache.set(key, value)
