# expect: RT402
# loop= passed to wait_for.
import asyncio


class Client:
    def __init__(self, loop):
        self.loop = loop

    async def call(self, coro):
        return await asyncio.wait_for(coro, 5, loop=self.loop)
