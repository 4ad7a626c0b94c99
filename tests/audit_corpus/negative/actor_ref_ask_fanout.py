# expect: none
# Asking actors: each ask goes into a bounded mailbox.
import asyncio


async def score_all(scorer, items):
    return await asyncio.gather(*(scorer.ask(item, timeout=30) for item in items))
