# expect: none
# A TaskGroup with two fixed children.
import asyncio


async def reader():
    pass


async def writer():
    pass


async def pump():
    async with asyncio.TaskGroup() as tg:
        tg.create_task(reader())
        tg.create_task(writer())
