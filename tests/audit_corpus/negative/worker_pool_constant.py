# expect: none
# A fixed pool of workers reading a bounded channel.
import trio

N_WORKERS = 8


async def worker(receive):
    async for job in receive:
        await trio.sleep(0)


async def run(jobs):
    send, receive = trio.open_memory_channel(100)
    async with trio.open_nursery() as nursery:
        for _ in range(N_WORKERS):
            nursery.start_soon(worker, receive.clone())
        async with send:
            for job in jobs:
                await send.send(job)
