# expect: none
# The spawned method asks a runtime resource.
from runtime import Actor, handler


class Summarizer(Actor):
    async def summarize(self, doc):
        return await self.ctx.resource("llm").ask(doc)

    @handler
    async def run(self, msg: list) -> None:
        for doc in msg:
            self.ctx.nursery.start_soon(self.summarize, doc)
