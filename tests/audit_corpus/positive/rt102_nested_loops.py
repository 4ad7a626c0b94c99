# expect: RT102
# A task per item of every user.
import asyncio


async def sync_item(item):
    await asyncio.sleep(0)


async def sync_all(users):
    async with asyncio.TaskGroup() as tg:
        for user in users:
            for item in user.items:
                tg.create_task(sync_item(item))
