# expect: none
# The async client, awaited.
from openai import AsyncOpenAI

client = AsyncOpenAI(timeout=20.0)


async def answer(question):
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
    )
    return completion.choices[0].message.content
