# expect: RT501
# Fire and forget: the task may be collected mid-run.
import asyncio


async def send_metrics(payload):
    await asyncio.sleep(0)


async def handle(request):
    asyncio.create_task(send_metrics(request))
    return {"ok": True}
