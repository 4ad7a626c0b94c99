# expect: none
# The client is wrapped in an object that is returned.
from openai import AsyncOpenAI


class Agent:
    def __init__(self, client):
        self.client = client


def build_agent():
    client = AsyncOpenAI(timeout=30.0)
    return Agent(client)
