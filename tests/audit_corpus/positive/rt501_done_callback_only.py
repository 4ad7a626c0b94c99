# expect: RT501
# A done callback does not keep the task alive.
import asyncio
import logging


async def job():
    pass


def log_result(task):
    logging.info("done: %s", task)


async def start():
    asyncio.create_task(job()).add_done_callback(log_result)
