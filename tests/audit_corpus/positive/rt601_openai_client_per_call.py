# expect: RT601
# A new AsyncOpenAI client (and connection pool) per call.
from openai import AsyncOpenAI


async def classify(text):
    client = AsyncOpenAI(timeout=30.0)
    response = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
    )
    return response.choices[0].message.content
