# expect: RT801
# A sync Anthropic client stored on self, called from an async method.
import anthropic


class Agent:
    def __init__(self):
        self.client = anthropic.Anthropic(timeout=20.0)

    async def step(self, messages):
        return self.client.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=512, messages=messages
        )
