# expect: none
# The sync client's call runs in a thread.
import asyncio

from anthropic import Anthropic

client = Anthropic(timeout=30.0)


async def ask(messages):
    return await asyncio.to_thread(
        client.messages.create, model="claude-3-5-haiku-latest", max_tokens=256, messages=messages
    )
