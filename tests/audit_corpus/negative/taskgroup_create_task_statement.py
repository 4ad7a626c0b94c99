# expect: none
# A TaskGroup holds its tasks.
import asyncio


async def job(n):
    return n


async def main():
    async with asyncio.TaskGroup() as tg:
        tg.create_task(job(1))
