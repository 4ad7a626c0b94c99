"""Agents and messages for the workflow tests (in process and through the CLI)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import trio

import runtime
from runtime.workflow import Invalid, current_step_key


@attrs.frozen
class Job:
    """Do ``name``: answer ``answer`` (default: the name), after ``sleep``
    seconds; raise for the first ``fail_first`` executions of that name."""

    name: str
    answer: str = ""
    sleep: float = 0.0
    fail_first: int = 0
    feedback: str | None = None


@attrs.frozen
class Verdict:
    ok: bool
    score: int


@attrs.frozen
class Judge:
    """Answer a ``Verdict`` for ``score``."""

    score: int


@attrs.frozen
class Echo:
    """Answer ``text`` and ``count`` as given (after templates filled them in)."""

    text: str
    count: int = 0
    verdict: Verdict | None = None


class Tally:
    """What the agents saw: each execution in order, and the most at once."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []  # (start or end, name)
        self.now = 0
        self.peak = 0
        self.runs: Counter[str] = Counter()
        self.keys: list[str | None] = []
        self.messages: list[Any] = []

    def order(self, kind: str = "start") -> list[str]:
        return [name for what, name in self.events if what == kind]


class Worker(runtime.Actor[None]):
    """Handles ``Job``; counts into ``tally`` (in process) and appends one
    line per execution to ``record`` (a file, through the CLI)."""

    def __init__(self, *, tally: Tally | None = None, record: str = "", answer: str = "") -> None:
        self.tally = tally if tally is not None else Tally()
        self.record = record
        self.answer = answer  # this agent's answer to every job, when given

    @runtime.handler
    async def job(self, msg: Job) -> str:
        tally = self.tally
        tally.events.append(("start", msg.name))
        tally.keys.append(current_step_key())
        tally.messages.append(msg)
        tally.now += 1
        tally.peak = max(tally.peak, tally.now)
        try:
            tally.runs[msg.name] += 1
            await trio.sleep(msg.sleep)
            if tally.runs[msg.name] <= msg.fail_first:
                raise RuntimeError(f"{msg.name} failed")
        finally:
            tally.now -= 1
            tally.events.append(("end", msg.name))
        if self.record:
            async with await trio.open_file(self.record, "a", encoding="utf-8") as file:
                await file.write(f"{current_step_key()} {os.getpid()}\n")
        return self.answer or msg.answer or msg.name

    @runtime.handler
    async def judge(self, msg: Judge) -> Verdict:
        return Verdict(msg.score > 0, msg.score)

    @runtime.handler
    async def echo(self, msg: Echo) -> Echo:
        self.tally.messages.append(msg)
        return msg


class Relay(runtime.Actor[None]):
    """Asks ``root/worker`` on behalf of the step: the key goes along."""

    @runtime.handler
    async def job(self, msg: Job) -> str:
        answer: str = await self.ctx.ref("root/worker").ask(msg)
        return answer


@attrs.frozen
class Launch:
    pass


class Launcher(runtime.Actor[None]):
    """Once started, runs the topology's workflow ``workflow`` as ``run_id``
    (what an application's actor does under ``runtime start``)."""

    def __init__(self, *, workflow: str, run_id: str) -> None:
        self.workflow = workflow
        self.run_id = run_id

    async def on_start(self) -> None:
        self.ctx.self_ref.tell_nowait(Launch())

    @runtime.handler
    async def launch(self, msg: Launch) -> None:
        await self.ctx.system.run_workflow(self.workflow, run_id=self.run_id)


def no_bad_answers(value: str) -> None:
    """Refuse an answer that says ``bad``."""
    if "bad" in value:
        raise Invalid(f"{value!r} is bad: answer again")


def always_refuse(value: object) -> None:
    raise Invalid("not good enough")


def sqlite_journals(store: Path, workflow: str) -> dict[str, dict[str, Any]]:
    """The journals of ``workflow``'s runs in a SQLite checkpoint store, by
    run id, each ``{"status": ..., "steps": {name: entry}}``: the run's entry
    with the steps journaled in entries of their own (a step in both is
    taken from the one that says it succeeded, else from the run's entry).
    Empty while the store's file or table does not exist yet."""
    prefix = f"workflow/{workflow}/"
    if not store.exists():
        return {}
    with sqlite3.connect(store) as db:
        try:
            rows = db.execute(
                "SELECT path, data FROM runtime_checkpoints WHERE substr(path, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()
        except sqlite3.OperationalError:  # killed before the store's table was made
            return {}
    runs: dict[str, dict[str, Any]] = {}
    own: list[tuple[str, str, dict[str, Any]]] = []
    for path, data in rows:
        run_id, _, step = path[len(prefix) :].partition("/step/")
        if step:
            own.append((run_id, step, json.loads(data)))
        else:
            document = json.loads(data)
            runs[run_id] = {"status": document["status"], "steps": dict(document["steps"])}
    for run_id, step, entry in own:
        if run_id not in runs:
            continue  # not the step of a run that was begun
        steps = runs[run_id]["steps"]
        if step not in steps or entry["status"] == "succeeded":
            steps[step] = entry
    return runs
