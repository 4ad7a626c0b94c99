# expect: RT501 RT403
# ensure_future as a statement.
import asyncio


async def cleanup():
    pass


def schedule_cleanup():
    asyncio.ensure_future(cleanup())
