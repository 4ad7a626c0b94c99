# expect: none
# anyio: the task holds a CapacityLimiter.
import anyio

limiter = anyio.CapacityLimiter(4)


async def convert(path):
    async with limiter:
        await anyio.sleep(0)


async def convert_all(paths):
    async with anyio.create_task_group() as tg:
        for path in paths:
            tg.start_soon(convert, path)
