# expect: none
# create_task, kept and awaited.
import asyncio


async def job():
    pass


async def main():
    task = asyncio.create_task(job())
    await task
