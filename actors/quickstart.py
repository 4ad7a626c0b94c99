"""A supervised fan-out pipeline: the quickstart example.

``Source`` sends ``items`` jobs to a pool-like ``Worker`` (it handles four
jobs at once) and retries a job whose handler crashed. ``Worker`` crashes on
the first attempt of every ``fail_every``-th job, standing in for a flaky agent;
its supervisor restarts it and the jobs queued in its mailbox are kept.
``Tally`` counts the results. When every job is counted the source stops
itself, and ``runtime start --until-idle`` ends with a summary.
"""

from __future__ import annotations

import attrs
import structlog
import trio

import runtime
from runtime.errors import ActorFailed, ActorStopped

log = structlog.get_logger("quickstart")


@attrs.frozen
class Start:
    """Ask the source to send its jobs."""


@attrs.frozen
class Job:
    """One unit of work; ``attempt`` counts retries."""

    number: int
    attempt: int = 0


@attrs.frozen
class Result:
    """A finished job and the words it counted."""

    number: int
    words: int


@attrs.frozen
class Count:
    """Ask the tally how many results it has."""


class FlakyAgentError(RuntimeError):
    """The simulated failure of a worker."""


@attrs.define
class TallyState:
    results: int = 0
    words: int = 0


class Tally(runtime.Actor[TallyState]):
    """Counts results."""

    @runtime.handler
    async def result(self, msg: Result) -> None:
        self.state.results += 1
        self.state.words += msg.words

    @runtime.handler
    async def count(self, msg: Count) -> int:
        return self.state.results

    async def on_stop(self) -> None:
        log.info("tally", results=self.state.results, words=self.state.words)


class Worker(runtime.Actor[None]):
    """Handles a job: pretends to call a model, counts words, reports to the tally."""

    def __init__(self, *, tally: str, fail_every: int = 0, latency: float = 0.02) -> None:
        self.tally = self.ctx.ref(tally)
        self.fail_every = int(fail_every)
        self.latency = float(latency)  # seconds a simulated model call takes

    @runtime.handler
    async def job(self, msg: Job) -> int:
        await trio.sleep(self.latency)
        if self.fail_every and msg.number % self.fail_every == 0 and msg.attempt == 0:
            raise FlakyAgentError(f"job {msg.number} failed on its first attempt")
        words = len(f"job {msg.number} was handled by {self.ctx.path}".split())
        await self.tally.tell(Result(msg.number, words))
        return words


class Source(runtime.Actor[None]):
    """Sends ``items`` jobs, at most ``parallel`` at once, retrying failed ones."""

    def __init__(self, *, worker: str, items: int = 100, parallel: int = 8) -> None:
        self.worker = self.ctx.ref(worker)
        self.items = int(items)
        self.parallel = int(parallel)
        self.finished = 0

    async def on_start(self) -> None:
        self.ctx.self_ref.tell_nowait(Start())

    @runtime.handler
    async def start(self, msg: Start) -> None:
        # For the progress line and the summary. Set, not added: a restarted
        # source sends every job again and counts them once.
        self.ctx.set_progress(total=self.items, done=0)
        limiter = trio.Semaphore(self.parallel)
        async with trio.open_nursery() as nursery:
            for number in range(1, self.items + 1):
                await limiter.acquire()
                nursery.start_soon(self._run, number, limiter)
        log.info("source_done", items=self.items)
        self.ctx.stop()

    async def _run(self, number: int, limiter: trio.Semaphore) -> None:
        try:
            for attempt in range(5):
                try:
                    await self.worker.ask(Job(number, attempt), timeout=10)
                except (ActorFailed, ActorStopped):
                    log.info("job_retry", job=number, attempt=attempt + 1)
                    self.ctx.progress(retried=1)
                else:
                    self.finished += 1
                    self.ctx.set_progress(done=self.finished)
                    return
            log.error("job_gave_up", job=number)
        finally:
            limiter.release()
