# expect: none
# A factory returns the session to its owner.
import aiohttp


def make_session():
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
    return session
