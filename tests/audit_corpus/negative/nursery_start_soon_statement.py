# expect: none
# A trio nursery holds its tasks.
import trio


async def ticker():
    await trio.sleep(1)


async def main():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
