"""The cell of an actor with a durable mailbox (``mailbox: {durable: true}``).

A tell taken from the actor's JetStream stream reaches the cell as an ask of
a ``Sequenced`` message: the tell and its stream sequence. The cell skips it
if its checkpoint already records that sequence (a redelivery after a crash
or a failover); else it runs the handler, then writes the state and the
sequence in one checkpoint, then replies. The consumer acknowledges the
stream message only after that reply, so an acknowledged tell was applied
once and is never applied again.

Tells that arrived together come as one ``SequencedBatch``: their handlers
run one after the other, in stream order, and one checkpoint records the
state after the last with its sequence. A handler that raises fails the
whole batch (none of it is written: the actor restarts from its checkpoint)
and the consumer hands the batch's tells over one at a time.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._actor import Actor, state_class
from ._cell import ActorCell
from ._checkpoint import Checkpointer
from ._correlation import CURRENT
from ._mailbox import Ask
from .errors import ActorFailed

__all__ = ["BatchFailed", "DurableCell", "Sequenced", "SequencedBatch"]


class BatchFailed(ActorFailed):
    """A batch's handler raised (or its checkpoint failed) on the tell at
    stream sequence ``sequence``; nothing of the batch was written."""

    def __init__(self, message: str, sequence: int) -> None:
        super().__init__(message)
        self.sequence = sequence


@attrs.frozen
class Sequenced:
    """A tell from a durable mailbox's stream, with its stream sequence and
    its sender's correlation id (0: none)."""

    message: object
    sequence: int
    correlation: int | str = 0


@attrs.frozen
class SequencedBatch:
    """Tells from a durable mailbox's stream, in stream order."""

    tells: tuple[Sequenced, ...]


class DurableCell(ActorCell):
    """An actor cell whose checkpoint keeps the last stream sequence applied."""

    __slots__ = ()

    def check_type(self, msg: object) -> None:
        if type(msg) is SequencedBatch:
            for told in msg.tells:
                super().check_type(told.message)
            return
        super().check_type(msg.message if type(msg) is Sequenced else msg)

    async def _initial_state(self) -> object:
        if self.checkpointer is None:
            state_type = state_class(self.actor_cls)
            assert state_type is not None  # checkpoint: message (checked with the topology)
            self.checkpointer = Checkpointer(
                self.path,
                self.host.checkpoint_store(),
                self.host.checkpoints,
                state_type,
                self.log,
                sequenced=True,
            )
        return await super()._initial_state()

    @property
    def applied(self) -> int:
        """The last stream sequence applied to the state (0: none yet)."""
        checkpointer = self.checkpointer
        return 0 if checkpointer is None else checkpointer.sequence or 0

    async def handle_item(self, actor: Actor[Any], item: object) -> None:
        if type(item) is Ask and type(item.msg) is SequencedBatch:
            await self._handle_batch(actor, item)
            return
        if type(item) is not Ask or type(item.msg) is not Sequenced:
            await super().handle_item(actor, item)
            return
        told: Sequenced = item.msg
        checkpointer = self.checkpointer
        assert checkpointer is not None and checkpointer.sequence is not None
        if told.sequence <= checkpointer.sequence:
            item.reply(False)  # applied before (a redelivery): acknowledged, not handled
            return
        msg = told.message
        try:
            await self.table[type(msg)](actor, msg)
            # The sequence is recorded only once the handler is done, and
            # written with the state it produced.
            checkpointer.sequence = told.sequence
            await self.save(actor)
        except BaseException as exc:
            self._failed(item, msg, exc)
            raise
        self._replied(item, True, 1)

    async def _handle_batch(self, actor: Actor[Any], item: Ask) -> None:
        """Apply the batch's new tells, write one checkpoint, reply with how
        many were applied."""
        batch: SequencedBatch = item.msg  # type: ignore[assignment]
        checkpointer = self.checkpointer
        assert checkpointer is not None and checkpointer.sequence is not None
        slot = CURRENT.get()
        applied = 0
        msg: object = batch
        at = batch.tells[-1].sequence  # a failed write: the batch's last
        try:
            for told in batch.tells:
                if told.sequence <= checkpointer.sequence:
                    continue
                msg, at = told.message, told.sequence
                if slot is not None:
                    slot.value = told.correlation  # each tell's own chain
                await self.table[type(msg)](actor, msg)
                checkpointer.sequence = told.sequence
                applied += 1
            at = batch.tells[-1].sequence
            if applied:
                await self.save(actor)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.failed += 1
                failure = BatchFailed(str(self._failure(msg, exc)), at)
                failure.__cause__ = exc
                item.fail(failure)
            else:
                item.fail(self._failure(msg, exc))
            raise
        self._replied(item, applied, applied)

    def _failed(self, item: Ask, msg: object, exc: BaseException) -> None:
        """A handler or the checkpoint failed: the asking consumer hears why
        (the actor crashes, its state back to its checkpoint)."""
        if isinstance(exc, Exception):
            self.failed += 1
        item.fail(self._failure(msg, exc))

    def _replied(self, item: Ask, reply: object, handled: int) -> None:
        item.reply(reply)
        self.handled += handled
        if self.record.consecutive_crashes:
            self.recovered()
