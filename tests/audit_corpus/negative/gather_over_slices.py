# expect: none
# Slices of 50.
import asyncio


async def index(doc):
    return doc


async def index_all(docs):
    for start in range(0, len(docs), 50):
        await asyncio.gather(*(index(doc) for doc in docs[start : start + 50]))
