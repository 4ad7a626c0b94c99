# expect: RT102
# A TaskGroup over every message of a batch from a broker.
import asyncio


async def handle(message):
    await asyncio.sleep(0)


async def consume(messages):
    async with asyncio.TaskGroup() as tg:
        for message in messages:
            tg.create_task(handle(message))
