# expect: none
# A gather over a fixed tuple of three calls.
import asyncio


async def user(uid):
    return uid


async def orders(uid):
    return []


async def prefs(uid):
    return {}


async def profile(uid):
    return await asyncio.gather(user(uid), orders(uid), prefs(uid))
