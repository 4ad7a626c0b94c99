# expect: RT303
# openai.OpenAI made at import time, no timeout.
import openai

client = openai.OpenAI(max_retries=5)
