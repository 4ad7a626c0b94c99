# expect: RT201
# asyncio.Queue(0) is unbounded too.
import asyncio

events = asyncio.Queue(0)
