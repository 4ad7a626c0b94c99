# expect: RT203
# from queue import Queue, then a blocking join() in a coroutine.
from queue import Queue

work = Queue()


async def wait_for_workers():
    work.join()
