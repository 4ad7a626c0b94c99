# expect: none
# Options from configuration: the timeout may be among them.
from openai import AsyncOpenAI


def make_client(settings: dict):
    return AsyncOpenAI(**settings)
