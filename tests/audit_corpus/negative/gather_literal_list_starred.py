# expect: none
# A starred literal list of three calls.
import asyncio


async def a():
    pass


async def b():
    pass


async def main():
    await asyncio.gather(*[a(), b(), a()])
