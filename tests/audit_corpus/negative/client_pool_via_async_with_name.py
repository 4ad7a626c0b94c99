# expect: none
# The pool is made, then entered.
import asyncpg


async def main(dsn):
    pool = asyncpg.create_pool(dsn, command_timeout=10)
    async with pool:
        await pool.fetch("SELECT 1")
