# expect: none
# aiosqlite is async.
import aiosqlite


async def notes(path):
    async with aiosqlite.connect(path) as db:
        async with db.execute("SELECT * FROM notes") as cursor:
            return await cursor.fetchall()
