# expect: RT101
# Calling a client method directly for each id.
import asyncio


async def load_users(api, user_ids):
    return await asyncio.gather(*[api.get_user(user_id) for user_id in user_ids])
