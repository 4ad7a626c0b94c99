# expect: RT801
# A module-level sync client called from an async handler.
from openai import OpenAI

client = OpenAI(timeout=30.0)


async def handle(prompt):
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
    )
    return completion.choices[0].message.content
