# expect: RT601
# Handing the client to a helper does not close it.
import httpx


async def fetch(client, path):
    return (await client.get(path)).text


async def main(paths):
    client = httpx.AsyncClient()
    results = []
    for path in paths:
        results.append(await fetch(client, path))
    return results
