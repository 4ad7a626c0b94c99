# expect: RT801
# psycopg2 in an async task.
import psycopg2


async def store(row, dsn):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (%s)", (row,))
