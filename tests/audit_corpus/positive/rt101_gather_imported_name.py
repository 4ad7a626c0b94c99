# expect: RT101
# gather imported by name.
from asyncio import gather


async def ping(host):
    return host


async def ping_all(hosts):
    return await gather(*[ping(h) for h in hosts])
