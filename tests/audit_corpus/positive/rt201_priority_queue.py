# expect: RT201
# A scheduler's priority queue with no bound.
import asyncio


class Scheduler:
    def __init__(self):
        self.pending = asyncio.PriorityQueue()
