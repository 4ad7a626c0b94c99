# expect: none
# A pool with a command timeout, closed by its owner.
import asyncpg


class Database:
    async def open(self, dsn):
        self.pool = await asyncpg.create_pool(dsn, command_timeout=60)

    async def close(self):
        await self.pool.close()
