# expect: none
# get(block=False) does not block.
import queue

inbox = queue.Queue()


async def take():
    try:
        return inbox.get(block=False)
    except queue.Empty:
        return None
