# expect: RT403
# ensure_future imported by name.
from asyncio import ensure_future


async def poll():
    return None


def schedule(pending):
    pending.append(ensure_future(poll()))
