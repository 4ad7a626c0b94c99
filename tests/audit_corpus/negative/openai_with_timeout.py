# expect: none
# An OpenAI client with a timeout.
from openai import AsyncOpenAI

client = AsyncOpenAI(timeout=60.0, max_retries=2)
