# expect: RT303
# timeout=None removes even the default.
from openai import AsyncOpenAI

llm = AsyncOpenAI(timeout=None, max_retries=2)
