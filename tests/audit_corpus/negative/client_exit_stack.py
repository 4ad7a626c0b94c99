# expect: none
# An AsyncExitStack owns the client.
import contextlib

import httpx


async def run(stack: contextlib.AsyncExitStack):
    client = httpx.AsyncClient()
    await stack.enter_async_context(client)
    return await client.get("https://example.invalid")
