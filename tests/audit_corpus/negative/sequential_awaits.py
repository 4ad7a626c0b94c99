# expect: none
# A loop that awaits each call in turn.
async def fetch(url):
    return url


async def fetch_all(urls):
    return [await fetch(url) for url in urls]
