"""Parallel documentation: a planner fans sections out to a pool of writers.

``Planner`` splits a guide into ``sections`` sections and asks the pool of
``SectionWriter`` actors at ``pool`` for each one; the pool routes each ask
to its least busy writer. Every writer drafts its section with one call to the ``llm``
resource, so however many writers there are, the model sees no more calls
at once, and no more per minute, than the resource's ``max_concurrency`` and
``rate`` admit. A writer that fails (a 429 that outlived the resource's
retries, an open breaker, or the failure it is told to inject) crashes; its
supervisor restarts it and the planner retries the section with exponential
backoff. Written sections are checkpointed, so a run that was killed resumes
with the sections it had not written yet. When every section is written,
``Merger`` assembles the document in order and writes it to a file, and the
planner stops itself, so ``runtime start --until-idle`` ends.
"""

from __future__ import annotations

import random
from pathlib import Path

import attrs
import structlog
import trio

import runtime
from runtime.errors import ActorFailed, ActorStopped, AskTimeout, CircuitOpen, MailboxFull
from runtime.resources.llm import Chat, ChatResult

log = structlog.get_logger("docs")

TOPICS = (
    "Actors and messages",
    "Mailboxes and backpressure",
    "Supervision trees",
    "Restart backoff",
    "Circuit breakers",
    "Checkpointed state",
    "Resources and their limits",
    "Rate limits",
    "Retries and Retry-After",
    "Graceful shutdown",
    "Metrics and logs",
    "Testing with a fake model",
)

SYSTEM_PROMPT = (
    "You write one section of a technical guide at a time: plain prose and short "
    "examples, no heading (the editor adds it), at most 300 words."
)

RETRYABLE = (ActorFailed, ActorStopped, AskTimeout, CircuitOpen, MailboxFull)
"""How a writer can fail from the planner's side: it crashed (``ActorFailed``),
stopped or was restarted mid-section, took too long, has its circuit open or
a full mailbox. Each is retried with backoff, on the writer the pool picks
(a writer whose circuit is open is skipped; with every circuit open the pool
refuses at once with ``CircuitOpen``)."""


def heading(number: int) -> str:
    """The heading of section ``number`` (1-based): the topics in turn, in parts."""
    topic = TOPICS[(number - 1) % len(TOPICS)]
    part = (number - 1) // len(TOPICS) + 1
    return topic if part == 1 else f"{topic}, part {part}"


@attrs.frozen
class WriteSection:
    """Ask a writer for section ``number`` of ``total``; ``attempt`` counts retries."""

    title: str
    number: int
    total: int
    heading: str
    attempt: int = 0


@attrs.frozen
class Merge:
    """Ask the merger to write the document: ``sections`` in order."""

    title: str
    sections: tuple[str, ...]


@attrs.frozen
class Plan:
    """Ask the planner to write (or finish writing) the document."""


class WriterError(RuntimeError):
    """The failure a writer injects, standing in for a flaky agent."""


class SectionWriter(runtime.Actor[None]):
    """Drafts one section per message through the ``llm`` resource.

    Args:
        fail_every: crash on the first attempt of every ``fail_every``-th
            section (0: never), before calling the model, to show the
            planner's retries and the supervisor's restarts.
        timeout: seconds the writer waits for the model, admission included.
    """

    def __init__(self, *, fail_every: int = 0, timeout: float = 300.0) -> None:
        self.fail_every = int(fail_every)
        self.timeout = float(timeout)

    @runtime.handler
    async def write(self, msg: WriteSection) -> str:
        if self.fail_every and msg.number % self.fail_every == 0 and msg.attempt == 0:
            raise WriterError(f"section {msg.number}: the writer lost its train of thought")
        prompt = (
            f"Write section {msg.number} of {msg.total} of the guide {msg.title!r}: {msg.heading}."
        )
        # A ResourceError (a 429 or 5xx the resource's own retries did not get
        # past) or CircuitOpen crashes the writer: the planner retries the section.
        result: ChatResult = await self.ctx.resource("llm").ask(
            Chat.prompt(prompt, system=SYSTEM_PROMPT), timeout=self.timeout
        )
        return f"## {msg.number}. {msg.heading}\n\n{result.text.strip()}\n"


class Merger(runtime.Actor[None]):
    """Writes the sections, in the order given, to ``output`` (a file path)."""

    def __init__(self, *, output: str = ".runtime/docs.md") -> None:
        self.output = Path(output)

    @runtime.handler
    async def merge(self, msg: Merge) -> str:
        text = f"# {msg.title}\n\n" + "\n".join(msg.sections)
        path = trio.Path(self.output)
        await path.parent.mkdir(parents=True, exist_ok=True)
        await path.write_text(text, encoding="utf-8")
        where = str(await path.resolve())
        log.info("document_merged", path=where, sections=len(msg.sections), bytes=len(text))
        # With the fake provider, the limits as the backend saw them.
        seen = self.ctx.system.resource_statistics()["llm"].backend
        if "fake_peak_in_flight" in seen:
            log.info(
                "llm_limits_seen",
                peak_in_flight=int(seen["fake_peak_in_flight"]),
                most_in_rate_window=int(seen.get("fake_most_in_rate_window", 0)),
            )
        return where


@attrs.define
class PlanState:
    """What the planner checkpoints: the job, the sections written so far,
    and where the finished document went (None until merged).

    ``written`` is keyed by the section's number as a string: the state is
    JSON, whose object keys are strings.
    """

    job: str = ""
    written: dict[str, str] = attrs.Factory(dict)
    document: str | None = None


class Planner(runtime.Actor[PlanState]):
    """Splits the guide into sections, fans them out to the writers, merges.

    Args:
        pool: the path of the pool of writers.
        merger: the path of the ``Merger``.
        sections: how many sections the guide has.
        title: the guide's title.
        attempts: tries per section before the planner gives up on it.
        backoff: the first retry's delay in seconds; it doubles with each
            retry, up to ``max_backoff``, and is jittered (seeded by ``seed``)
            so that sections that failed together do not retry together.
        timeout: seconds one attempt may take, waiting in a writer's mailbox included.
    """

    def __init__(
        self,
        *,
        pool: str,
        merger: str,
        sections: int = 50,
        title: str = "The actor runtime guide",
        attempts: int = 6,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        seed: int = 0,
        timeout: float = 600.0,
    ) -> None:
        self.writers = self.ctx.ref(pool)
        self.merger = self.ctx.ref(merger)
        self.sections = int(sections)
        self.title = title
        self.attempts = int(attempts)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.random = random.Random(int(seed))
        self.timeout = float(timeout)

    async def on_start(self) -> None:
        self.ctx.self_ref.tell_nowait(Plan())

    @runtime.handler
    async def plan(self, msg: Plan) -> None:
        job = f"{self.title} ({self.sections} sections)"
        if self.state.job != job or self.state.document is not None:
            self.state = PlanState(job=job)  # a new job, not the rest of an earlier one
        missing = self._missing()
        # Set, not added: a restarted planner counts its sections once.
        self.ctx.set_progress(total=self.sections, done=self.sections - len(missing))
        log.info("plan", job=job, sections=self.sections, to_write=len(missing))
        # The whole fan-out runs inside this handler: while it runs the
        # planner is busy, so `--until-idle` waits for it, backoffs included.
        async with trio.open_nursery() as nursery:
            for number in missing:
                nursery.start_soon(self._section, number)
        failed = self._missing()
        if failed:
            log.error("document_incomplete", failed=failed, hint="run again to resume")
        else:
            sections = tuple(self.state.written[str(n)] for n in range(1, self.sections + 1))
            self.state.document = await self.merger.ask(Merge(self.title, sections))
            log.info("document_written", path=self.state.document, sections=self.sections)
        self.ctx.stop()

    def _missing(self) -> list[int]:
        """The numbers of the sections not written yet, in order."""
        return [n for n in range(1, self.sections + 1) if str(n) not in self.state.written]

    async def _section(self, number: int) -> None:
        """Write section ``number`` through the pool, retrying with backoff."""
        msg = WriteSection(self.title, number, self.sections, heading(number))
        for attempt in range(self.attempts):
            if attempt:
                await trio.sleep(self._delay(attempt))
            try:
                text = await self.writers.ask(
                    attrs.evolve(msg, attempt=attempt), timeout=self.timeout
                )
            except RETRYABLE as exc:
                log.info("section_retry", section=number, attempt=attempt + 1, error=repr(exc))
                self.ctx.progress(retried=1)
                continue
            self.state.written[str(number)] = text
            self.ctx.set_progress(done=len(self.state.written))
            await self.ctx.checkpoint()  # a killed run resumes after this section
            return
        log.error("section_gave_up", section=number, attempts=self.attempts)

    def _delay(self, attempt: int) -> float:
        """The wait before retry ``attempt`` (1-based): capped exponential, half jittered."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return ceiling * self.random.uniform(0.5, 1.0)
