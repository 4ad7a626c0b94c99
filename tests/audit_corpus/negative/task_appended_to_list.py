# expect: none
# The task is stored on the object.
import asyncio


class Service:
    def __init__(self):
        self._tasks = []

    async def _heartbeat(self):
        await asyncio.sleep(5)

    def start(self):
        self._tasks.append(asyncio.create_task(self._heartbeat()))
