# expect: none
# The size comes from configuration: not a constant to judge.
import asyncio


class Pipeline:
    def __init__(self, settings):
        self.queue = asyncio.Queue(maxsize=settings.queue_size)
