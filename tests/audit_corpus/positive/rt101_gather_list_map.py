# expect: RT101
# list(map(...)) of coroutines.
import asyncio


async def translate(sentence):
    return sentence


async def translate_document(sentences):
    tasks = list(map(translate, sentences))
    return await asyncio.gather(*tasks)
