# expect: none
# The documented pattern: a set of tasks with add_done_callback(discard).
import asyncio

background_tasks = set()


async def send_email(to):
    await asyncio.sleep(0)


def schedule_email(to):
    task = asyncio.create_task(send_email(to))
    background_tasks.add(task)
    task.add_done_callback(background_tasks.discard)
