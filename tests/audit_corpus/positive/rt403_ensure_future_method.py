# expect: RT403
# ensure_future on a method's coroutine.
import asyncio


class Worker:
    async def run(self):
        await asyncio.sleep(0)

    def start(self):
        self.task = asyncio.ensure_future(self.run())
