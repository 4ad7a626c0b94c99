# expect: RT401
# In an async method.
import asyncio


class Clock:
    async def now(self):
        return asyncio.get_event_loop().time()
