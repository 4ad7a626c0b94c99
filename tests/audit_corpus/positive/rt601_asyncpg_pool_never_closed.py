# expect: RT601
# A pool made to run one query.
import asyncpg


async def count_users(dsn):
    pool = await asyncpg.create_pool(dsn, command_timeout=30)
    return await pool.fetchval("SELECT count(*) FROM users")
