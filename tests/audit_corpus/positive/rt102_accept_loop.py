# expect: RT102
# A raw accept loop: one task per connection, however many arrive.
import trio


async def handle(stream):
    await stream.aclose()


async def serve(listener):
    async with trio.open_nursery() as nursery:
        while True:
            stream = await listener.accept()
            nursery.start_soon(handle, stream)
