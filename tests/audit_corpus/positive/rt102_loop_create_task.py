# expect: RT102
# loop.create_task per job.
import asyncio


async def run(job):
    await asyncio.sleep(0)


async def run_jobs(jobs):
    loop = asyncio.get_running_loop()
    futures = []
    for job in jobs:
        futures.append(loop.create_task(run(job)))
    await asyncio.wait(futures)
