# expect: none
# The task is returned to the caller.
import asyncio


async def poll():
    pass


def start_polling():
    loop = asyncio.get_running_loop()
    return loop.create_task(poll())
