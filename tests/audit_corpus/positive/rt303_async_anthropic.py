# expect: RT303
# AsyncAnthropic with an API key but no timeout.
import os

from anthropic import AsyncAnthropic

claude = AsyncAnthropic(api_key=os.environ["ANTHROPIC_API_KEY"])
