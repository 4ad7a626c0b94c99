# expect: RT301
# The module-level helper with no timeout.
import httpx


def download(url):
    return httpx.get(url, timeout=None).content
