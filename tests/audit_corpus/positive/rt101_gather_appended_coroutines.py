# expect: RT101
# Coroutines collected in a loop, then gathered.
import asyncio


async def process(record):
    await asyncio.sleep(0)
    return record


async def run(records):
    coros = []
    for record in records:
        if record.get("active"):
            coros.append(process(record))
    return await asyncio.gather(*coros, return_exceptions=True)
