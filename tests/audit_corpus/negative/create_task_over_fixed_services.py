# expect: none
# Starting three fixed background services.
import asyncio


async def serve(name):
    await asyncio.sleep(0)


async def main():
    async with asyncio.TaskGroup() as tg:
        for name in ["http", "metrics", "admin"]:
            tg.create_task(serve(name))
