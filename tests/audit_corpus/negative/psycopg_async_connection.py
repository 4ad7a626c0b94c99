# expect: none
# psycopg 3's async connection.
import psycopg


async def store(dsn, row):
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.execute("INSERT INTO t VALUES (%s)", (row,))
