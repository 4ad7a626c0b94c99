# expect: none
# A concurrency-limiting decorator on the spawned function.
import asyncio
import functools


def limit_concurrency(n):
    sem = asyncio.Semaphore(n)

    def wrap(func):
        @functools.wraps(func)
        async def inner(*args):
            async with sem:
                return await func(*args)

        return inner

    return wrap


@limit_concurrency(5)
async def send(message):
    return message


async def send_all(messages):
    await asyncio.gather(*(send(m) for m in messages))
