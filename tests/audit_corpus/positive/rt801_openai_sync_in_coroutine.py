# expect: RT801
# The sync OpenAI client made in a coroutine.
from openai import OpenAI


async def answer(question):
    client = OpenAI(timeout=30)
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
    )
