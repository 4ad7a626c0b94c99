# expect: RT101
# One chat completion per prompt, all at once: the provider answers with 429s.
import asyncio

from openai import AsyncOpenAI

client = AsyncOpenAI(timeout=60.0)


async def complete_all(prompts: list[str]) -> list[str]:
    responses = await asyncio.gather(
        *[
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
            )
            for prompt in prompts
        ]
    )
    return [r.choices[0].message.content for r in responses]
