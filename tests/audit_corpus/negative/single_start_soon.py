# expect: none
# One server task.
import trio


class Server:
    async def _serve(self):
        await trio.sleep_forever()

    async def run(self):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve)
