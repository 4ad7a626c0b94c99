# expect: none
# A thread pool bounds the work.
from concurrent.futures import ThreadPoolExecutor


def resize(path):
    return path


def resize_all(paths):
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(resize, paths))
