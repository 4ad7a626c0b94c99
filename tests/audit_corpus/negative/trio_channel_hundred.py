# expect: none
# A buffered channel of 100.
import trio


async def main():
    send, receive = trio.open_memory_channel(100)
    async with send, receive:
        await send.send("x")
