# expect: none
# Closing every connection a pool holds: teardown, not new work.
import asyncio


class Pool:
    def __init__(self):
        self._holders = []

    async def close(self):
        await asyncio.gather(*(holder.close() for holder in self._holders))
