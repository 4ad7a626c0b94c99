# expect: none
# Every prompt goes to the runtime's llm resource, whose max_concurrency bounds it.
import asyncio

from runtime import Actor, handler


class Reviewer(Actor):
    @handler
    async def review(self, msg: list) -> list:
        llm = self.ctx.resource("llm")
        return await asyncio.gather(*(llm.ask(prompt) for prompt in msg))
