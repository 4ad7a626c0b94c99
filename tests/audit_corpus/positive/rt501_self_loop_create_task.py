# expect: RT501
# A stored loop's create_task as a statement.
import asyncio


class Connection:
    def __init__(self):
        self.loop = asyncio.new_event_loop()

    async def ping(self):
        pass

    def connection_made(self, transport):
        self.loop.create_task(self.ping())
