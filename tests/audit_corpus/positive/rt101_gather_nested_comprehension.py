# expect: RT101
# Embedding every chunk of every document at once.
import asyncio


async def embed(text):
    await asyncio.sleep(0)
    return [0.0]


async def embed_corpus(documents):
    jobs = [embed(chunk) for doc in documents for chunk in doc.chunks]
    return await asyncio.gather(*jobs)
