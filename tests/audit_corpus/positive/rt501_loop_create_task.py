# expect: RT501
# loop.create_task as a statement.
import asyncio


async def refresh():
    await asyncio.sleep(0)


async def on_startup():
    loop = asyncio.get_running_loop()
    loop.create_task(refresh())
