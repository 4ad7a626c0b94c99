# expect: RT102
# The most common form: a list comprehension of tasks.
import asyncio


async def summarize(doc):
    await asyncio.sleep(0)
    return doc[:100]


async def summarize_all(docs):
    tasks = [asyncio.create_task(summarize(doc)) for doc in docs]
    return await asyncio.gather(*tasks)
