"""A fake ``Host`` and scripted children: cells and supervisors tested alone,
without ``open_system``."""

from __future__ import annotations

from typing import Any

import trio

from runtime import ActorRef, ActorStatistics, ChildSpec, MemoryStore, SupervisorSpec
from runtime._backends import Backends
from runtime._budget import Ledger
from runtime._cell import ActorCell
from runtime._checkpoint import CheckpointCounters, CheckpointStore
from runtime._host import Child, RestartRecord
from runtime._supervisor import Supervisor


class FakeHost:
    """The ``Host`` protocol over plain lists and dicts, for unit tests."""

    def __init__(self) -> None:
        self.name = "fake"
        self.tracer: Any = None
        self.timed = False
        self.checkpoints = CheckpointCounters()
        self.backends = Backends(name="fakehost")
        self.ledger = Ledger("fake")
        self.system: Any = None
        self.store = MemoryStore()
        self.dead_letters: list[tuple[str, object, str]] = []
        self.progress = [0, 0, 0]  # added with ctx.progress: total, done, retried
        self.progress_by_path: dict[str, tuple[int, int, int]] = {}  # ctx.set_progress
        self.built: dict[str, Child] = {}
        self.forgotten: list[str] = []
        self.topics: dict[str, dict[Any, set[type]]] = {}
        self.scripted: dict[str, Any] = {}  # children build() returns instead of cells

    def trace_context(self) -> Any:
        return None

    def dead_letter(self, path: str, message: object, reason: str) -> None:
        self.dead_letters.append((path, message, reason))

    def checkpoint_store(self) -> CheckpointStore:
        return self.store

    def ref(self, path: str) -> ActorRef[Any]:
        child = self.built[path]
        assert isinstance(child, ActorCell)
        return child.ref

    def resource(self, name: str) -> ActorRef[Any]:
        return self.ref(f"resources/{name}")

    def find(self, tag: str) -> list[ActorRef[Any]]:
        return [
            child.ref
            for child in self.built.values()
            if isinstance(child, ActorCell) and tag in child.spec.tags
        ]

    def subscribe(self, topic: str, subscriber: Any, message_type: type) -> None:
        self.topics.setdefault(topic, {}).setdefault(subscriber, set()).add(message_type)

    def unsubscribe(self, topic: str, subscriber: Any, message_type: type | None) -> None:
        self.topics.get(topic, {}).pop(subscriber, None)

    def unsubscribe_all(self, subscriber: Any) -> None:
        for subscribers in self.topics.values():
            subscribers.pop(subscriber, None)

    async def publish(self, topic: str, event: object) -> None:
        for subscriber in list(self.topics.get(topic, {})):
            await subscriber.deliver(event)

    def count_progress(self, total: int, done: int, retried: int) -> None:
        self.progress = [
            self.progress[0] + total,
            self.progress[1] + done,
            self.progress[2] + retried,
        ]

    def set_progress(
        self, path: str, total: int | None, done: int | None, retried: int | None
    ) -> None:
        old = self.progress_by_path.get(path, (0, 0, 0))
        self.progress_by_path[path] = (
            old[0] if total is None else total,
            old[1] if done is None else done,
            old[2] if retried is None else retried,
        )

    def build(self, spec: ChildSpec | SupervisorSpec, prefix: str) -> Child:
        path = f"{prefix}{spec.name}"
        child: Child
        if spec.name in self.scripted:
            child = self.scripted[spec.name]
        elif isinstance(spec, SupervisorSpec):
            child = Supervisor(spec, path, self)
        else:
            child = ActorCell(spec, path, self)
        self.built[path] = child
        return child

    def forget(self, child: Child) -> None:
        self.forgotten.append(child.path)


class ScriptedChild:
    """A ``Child`` whose incarnations end when the test says: ``crash()`` or
    ``exit()``. It journals its starts and stops in a shared list."""

    kind = "actor"

    def __init__(self, name: str, journal: list[str], restart: str = "permanent") -> None:
        self.name = name
        self.path = f"root/{name}"
        self.status = "starting"
        self.incarnation = 0
        self.record = RestartRecord()
        self.done = trio.Event()
        self.done.set()
        self.task: trio.lowlevel.Task | None = None
        self.journal = journal
        self._restart = restart
        self._end: trio.Event | None = None
        self._error: BaseException | None = None
        self.scope: trio.CancelScope | None = None
        self.retired = False

    @property
    def restart(self) -> str:
        return self._restart

    @property
    def shutdown_timeout(self) -> float:
        return 1.0

    @property
    def starts_at_once(self) -> bool:
        return False

    def begin(self) -> None:
        raise AssertionError("scripted children are started and waited for")

    async def run_incarnation(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED, *, begun: bool = False
    ) -> BaseException | None:
        self.incarnation += 1
        self.status = "running"
        self.done = trio.Event()
        self.task = trio.lowlevel.current_task()
        self._end = trio.Event()
        self._error = None
        self.journal.append(f"start {self.name}")
        task_status.started()
        try:
            with trio.CancelScope() as self.scope:
                await self._end.wait()
            return self._error
        finally:
            self.journal.append(f"stop {self.name}")
            self.task = None
            self.scope = None
            self.done.set()

    def crash(self, error: BaseException | None = None) -> None:
        assert self._end is not None
        self._error = error or RuntimeError(f"{self.name} crashed")
        self._end.set()

    def exit(self) -> None:
        assert self._end is not None
        self._end.set()

    def request_stop(self, for_restart: bool = False) -> None:
        if self._end is not None:
            self._end.set()

    def kill(self) -> None:
        if self.scope is not None:
            self.scope.cancel()

    def retire(self, reason: str) -> None:
        self.status = "stopped"
        self.retired = True

    def reset_breaker(self) -> None:
        self.record.consecutive_crashes = 0

    def open_circuit(self, error: BaseException | None) -> float | None:
        return None

    def half_open(self) -> bool:
        return False

    def is_idle(self) -> bool:
        return True

    def statistics(self) -> ActorStatistics:
        return ActorStatistics(self.path, self.status, self.incarnation, 0, 0, 0, None, 0)
