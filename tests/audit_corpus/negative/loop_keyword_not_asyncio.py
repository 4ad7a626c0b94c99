# expect: none
# loop= passed to something that is not asyncio.
import uvicorn


def serve(app):
    uvicorn.run(app, loop="uvloop", port=8000)
