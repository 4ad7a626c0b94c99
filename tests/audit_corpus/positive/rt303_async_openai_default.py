# expect: RT303
# The async OpenAI client with its 10-minute default timeout.
from openai import AsyncOpenAI

client = AsyncOpenAI()


async def ask(prompt):
    response = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
    )
    return response.choices[0].message.content
