# expect: RT102
# A service spawning a method per incoming event.
import asyncio


class Dispatcher:
    def __init__(self):
        self.tasks = set()

    async def deliver(self, event):
        await asyncio.sleep(0)

    async def dispatch(self, events):
        for event in events:
            task = asyncio.create_task(self.deliver(event))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
