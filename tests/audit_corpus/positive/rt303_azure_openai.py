# expect: RT303
# Azure's async client, no timeout.
from openai import AsyncAzureOpenAI

client = AsyncAzureOpenAI(api_version="2024-06-01", azure_endpoint="https://example.invalid")
