# expect: RT201
# A LIFO stack of jobs, unbounded.
import asyncio

stack = asyncio.LifoQueue(maxsize=-1)
