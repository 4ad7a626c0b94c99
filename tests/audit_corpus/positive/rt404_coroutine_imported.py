# expect: RT404
# The decorator imported by name.
from asyncio import coroutine, sleep


@coroutine
def wait_a_bit():
    yield from sleep(0.1)
