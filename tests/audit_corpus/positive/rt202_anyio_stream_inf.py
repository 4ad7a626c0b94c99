# expect: RT202
# anyio memory object stream with an infinite buffer.
import math

import anyio


def make_stream():
    return anyio.create_memory_object_stream(math.inf)
