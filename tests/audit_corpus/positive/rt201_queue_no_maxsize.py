# expect: RT201
# A work queue with no bound between a fast producer and a slow consumer.
import asyncio


async def main(lines):
    queue = asyncio.Queue()
    for line in lines:
        await queue.put(line)
    return queue
