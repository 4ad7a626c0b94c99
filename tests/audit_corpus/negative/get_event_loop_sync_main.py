# expect: none
# get_event_loop in synchronous start-up code (not a coroutine).
import asyncio


async def main():
    pass


def run():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main())
