# expect: RT102
# anyio: one task per file.
import anyio


async def upload(path):
    await anyio.sleep(0)


async def upload_all(paths):
    async with anyio.create_task_group() as tg:
        for path in paths:
            tg.start_soon(upload, path)
