# expect: RT201
# Queue imported from asyncio, annotated in a class.
from asyncio import Queue


class Inbox:
    def __init__(self) -> None:
        self.messages: Queue[str] = Queue()
