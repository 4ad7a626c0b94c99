# expect: RT101
# asyncio.wait over one coroutine per user (old code, before 3.11 required tasks).
import asyncio


async def notify(user):
    await asyncio.sleep(0)


async def notify_all(users):
    done, _pending = await asyncio.wait([notify(u) for u in users])
    return done
