# expect: RT203
# A bridge class putting into a thread queue from a coroutine.
import queue


class Bridge:
    def __init__(self):
        self.outbox = queue.Queue(maxsize=10)

    async def forward(self, message):
        self.outbox.put(message)
