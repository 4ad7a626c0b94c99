# expect: none
# A thread queue used by a worker thread, not a coroutine.
import queue
import threading

tasks = queue.Queue(maxsize=100)


def worker():
    while True:
        item = tasks.get()
        tasks.task_done()


threading.Thread(target=worker, daemon=True).start()
