# expect: RT102
# start_soon with functools.partial per path.
import functools

import trio


async def upload(path, bucket):
    await trio.sleep(0)


async def upload_all(paths, bucket):
    async with trio.open_nursery() as nursery:
        for path in paths:
            nursery.start_soon(functools.partial(upload, bucket=bucket), path)
