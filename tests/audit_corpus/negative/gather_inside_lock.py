# expect: none
# A fan-out under a lock held by the caller.
import asyncio


class Cache:
    def __init__(self):
        self._lock = asyncio.Lock()

    async def load(self, key):
        return key

    async def refresh(self, keys):
        async with self._lock:
            await asyncio.gather(*(self.load(key) for key in keys))
