# expect: RT102 RT501
# A task per websocket message, fire and forget.
import asyncio


async def handle(message):
    await asyncio.sleep(0)


async def serve(websocket):
    async for message in websocket:
        asyncio.create_task(handle(message))
