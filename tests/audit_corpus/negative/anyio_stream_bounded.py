# expect: none
# anyio with a finite buffer.
from anyio import create_memory_object_stream

send, receive = create_memory_object_stream[str](max_buffer_size=50)
