# expect: none
# anyio's default buffer is 0.
import anyio

send, receive = anyio.create_memory_object_stream()
