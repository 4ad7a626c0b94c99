# expect: none
# httpx.get with its default timeout.
import httpx


def download(url):
    return httpx.get(url).content
