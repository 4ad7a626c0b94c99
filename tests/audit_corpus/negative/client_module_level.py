# expect: none
# One client for the process, made at import.
from openai import AsyncOpenAI

client = AsyncOpenAI(timeout=30.0)


async def ask(prompt):
    return await client.responses.create(model="gpt-4o-mini", input=prompt)
