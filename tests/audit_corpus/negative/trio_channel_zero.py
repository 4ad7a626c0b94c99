# expect: none
# A rendezvous channel.
import trio

send, receive = trio.open_memory_channel(0)
