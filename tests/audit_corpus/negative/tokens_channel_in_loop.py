# expect: none
# A bounded channel as a token bucket: each spawn waits for a token.
import trio


async def fetch(url, tokens):
    try:
        await trio.sleep(0)
    finally:
        await tokens.receive()


async def fetch_all(urls):
    send_token, receive_token = trio.open_memory_channel(10)
    async with trio.open_nursery() as nursery:
        for url in urls:
            await send_token.send(None)
            nursery.start_soon(fetch, url, receive_token)
