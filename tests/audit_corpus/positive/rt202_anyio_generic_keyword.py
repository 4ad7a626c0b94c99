# expect: RT202
# anyio 4's generic form, buffer by keyword, inf imported from math.
from math import inf

from anyio import create_memory_object_stream

send, receive = create_memory_object_stream[bytes](max_buffer_size=inf)
