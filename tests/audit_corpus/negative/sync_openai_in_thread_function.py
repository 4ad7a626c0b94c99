# expect: none
# The sync client in plain (thread) code.
from openai import OpenAI

client = OpenAI(timeout=30.0)


def answer(question):
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
    )
