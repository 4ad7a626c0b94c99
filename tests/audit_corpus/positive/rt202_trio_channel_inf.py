# expect: RT202
# trio's infinite channel: the docs warn against it.
import math

import trio


async def main():
    send, receive = trio.open_memory_channel(math.inf)
    async with send, receive:
        await send.send(1)
