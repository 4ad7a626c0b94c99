# expect: none
# A bounded queue, size given positionally.
import asyncio

jobs = asyncio.Queue(1000)
