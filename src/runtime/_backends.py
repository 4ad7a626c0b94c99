"""Coordination backends shared by processes: connections to PostgreSQL and
to NATS JetStream KV, reached from trio.

Locks, shared resource limits and budgets coordinate the processes that run
a system of the same name through one of these engines. Both drivers run on
asyncio (asyncpg, nats-py); this module calls them through trio-asyncio, so
it must be used inside ``trio_asyncio.open_loop()`` (``open_system`` opens
one when the topology needs it).

``Backends`` keeps one connection per URL for a system, made on first use
and closed when the system stops. Every call is bounded by a timeout, and an
engine that cannot be reached is ``BackendUnavailable`` (the caller decides
what to do then: a lock waits, a shared limit falls back to its local share).
A connection that was lost is made again by the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import re
import secrets
import socket
import sqlite3
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import asyncpg
import trio
import trio_asyncio

__all__ = [
    "BackendUnavailable",
    "Backends",
    "NatsBackend",
    "NatsKV",
    "NatsPullConsumer",
    "NatsSubscription",
    "NoResponders",
    "PostgresBackend",
    "SqliteFile",
    "backend_kind",
    "process_identity",
    "redacted",
    "run_inline",
    "run_to_end",
    "subject_token",
]

T = TypeVar("T")

DEFAULT_OP_TIMEOUT = 2.0
"""Seconds one call to an engine may take before it counts as unreachable."""

NATS_PENDING_SIZE = 2 * 1024 * 1024
"""Bytes nats-py buffers for sending before a publish waits for a flush
(its ``pending_size``, unless the connect options name another)."""

PUBLISH_HEADROOM = 64 * 1024
"""Bytes an inline publish keeps free in that buffer: one that would fill it
closer than this is made on asyncio, where nats-py may wait for the flush."""

_KINDS = {
    "memory": "memory",
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "nats": "nats",
    "tls": "nats",
}

PG_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08: connection exceptions
    asyncpg.InterfaceError,  # the connection was closed under the call
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, not accepting
    asyncpg.exceptions.CannotConnectNowError,
)
"""What asyncpg raises when the server cannot be reached."""

_PG_DOWN: tuple[type[BaseException], ...] = (*PG_UNREACHABLE, trio.TooSlowError)


@functools.cache
def _nats() -> Any:
    """nats-py, imported on first use: a process that coordinates through
    nothing, or through PostgreSQL only, never loads it."""
    import nats.errors  # noqa: PLC0415 (on first use only)
    import nats.js.errors  # noqa: PLC0415

    return nats


@functools.cache
def nats_unreachable() -> tuple[type[BaseException], ...]:
    """What nats-py raises when the server or JetStream cannot be reached."""
    nats = _nats()
    return (
        OSError,
        TimeoutError,
        trio.TooSlowError,
        nats.errors.Error,  # no servers, connection closed, timeout, ...
        nats.js.errors.ServiceUnavailableError,
        nats.js.errors.NoStreamResponseError,
    )


@functools.cache
def _nats_answers() -> tuple[type[BaseException], ...]:
    """What nats-py raises for an answer the engine gave (passed on as it is)."""
    errors = _nats().js.errors
    return (
        errors.NotFoundError,  # no such key, bucket or stream
        errors.BadRequestError,  # a compare-and-set that lost, among others
        errors.NoKeysError,
    )


_WRONG_LAST_SEQUENCE = (10071, 10164)
"""JetStream's error codes for a write whose expected revision was not the last."""


class BackendUnavailable(Exception):
    """A coordination engine (PostgreSQL, NATS) could not be reached in time."""


class NoResponders(Exception):
    """A NATS request found nobody subscribed to its subject (the server said
    so at once: during a failover, nobody serves the subject for a moment)."""


async def run_inline(coro: Coroutine[Any, Any, T], limit: float) -> T:
    """Run the asyncio coroutine ``coro`` in the calling trio task.

    trio-asyncio runs the asyncio loop in this thread, so a nats-py call that
    only appends to its buffers and kicks its flusher (a publish with room in
    the buffer) completes here at once, with no hop to an asyncio task and
    back (several scheduling rounds each way). Should it wait for an asyncio
    future after all, this task waits for that future, within ``limit``
    seconds, and carries on; cancelled or out of time, the coroutine is
    closed where it waits.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    try:
        with trio.fail_after(limit):
            while True:
                if yielded is not None:  # an asyncio future it waits for
                    yielded._asyncio_future_blocking = False
                    with contextlib.suppress(Exception):  # the coroutine reads its outcome
                        await trio_asyncio.run_aio_future(yielded)
                else:  # a bare yield: give the loop a turn
                    await trio.lowlevel.checkpoint()
                try:
                    yielded = coro.send(None)
                except StopIteration as done:
                    result = done.value
                    return result
    except BaseException:
        coro.close()
        raise


async def run_to_end(coro: Coroutine[Any, Any, T]) -> T:
    """Run the asyncio coroutine ``coro`` in an asyncio task and return its
    outcome, which the calling trio task waits for even when it is cancelled
    meanwhile (the cancellation takes effect at its next checkpoint), as a
    worker thread's call does. ``aio_as_trio`` would cancel the asyncio task
    instead, and whether the server applied a write would then be unknown.

    Raises:
        RuntimeError: no trio-asyncio loop is open.
        What ``coro`` raises.
    """
    loop = trio_asyncio.current_loop.get()
    if loop is None:
        coro.close()
        raise RuntimeError("asyncio calls need trio_asyncio.open_loop() around them")
    try:
        future = asyncio.ensure_future(coro, loop=loop)
    except BaseException:
        coro.close()
        raise
    task = trio.lowlevel.current_task()
    future.add_done_callback(lambda _: trio.lowlevel.reschedule(task))
    await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
    return future.result()


def process_identity() -> tuple[str, int, str]:
    """This process as other processes see it: ``(node, pid, member)``,
    ``node`` the host's name, ``member`` unique to this process's life
    (``node-pid-random``: a pid reused after a crash is another member)."""
    pid = os.getpid()
    found = _IDENTITY.get(pid)  # keyed by pid: a forked child makes its own
    if found is None:
        node = socket.gethostname()
        found = _IDENTITY[pid] = (node, pid, f"{node}-{pid}-{secrets.token_hex(3)}")
    return found


_IDENTITY: dict[int, tuple[str, int, str]] = {}


def backend_kind(url: str) -> str:
    """``memory``, ``sqlite``, ``postgresql`` or ``nats``: the engine ``url`` names.

    Raises:
        ValueError: not one of those schemes.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    kind = _KINDS.get(scheme)
    if kind is None:
        raise ValueError(
            f"{redacted(url)!r} is not a backend URL: use memory://, sqlite:///path, "
            "postgresql://... or nats://..."
        )
    return kind


def subject_token(name: str) -> str:
    """``name`` as one NATS subject token or stream/bucket-name part: other
    characters than letters, digits, ``_`` and ``-`` become ``=XX``."""
    return re.sub(r"[^A-Za-z0-9_-]", lambda m: f"={ord(m.group()):02x}", name)


def redacted(url: str) -> str:
    """``url`` without its password or token (for logs and errors)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and not parts.username:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username if parts.password is not None else None
    netloc = f"{user}:***@{host}" if user else f"***@{host}"
    return parts._replace(netloc=netloc).geturl()


class NatsKV:
    """One JetStream KV bucket, called from trio.

    Values are JSON objects. ``create`` and ``update`` are the engine's
    compare-and-set: they return None instead of raising when another
    process got there first.
    """

    def __init__(self, backend: NatsBackend, bucket: str, kv: Any) -> None:
        self.backend = backend
        self.bucket = bucket
        self._kv = kv

    async def get(self, key: str) -> tuple[dict[str, Any], int] | None:
        """The value of ``key`` and its revision; None if it has none."""
        try:
            entry = await self.backend.call(self._kv.get, key)
        except _nats().js.errors.KeyNotFoundError:
            return None
        if entry.value is None or not entry.value:
            return None
        return json.loads(entry.value), int(entry.revision)

    async def create(self, key: str, value: dict[str, Any]) -> int | None:
        """Set ``key`` if it has no value; its revision, or None if it has one."""
        errors = _nats().js.errors
        try:
            return int(await self.backend.call(self._kv.create, key, _encode(value)))
        except (errors.KeyWrongLastSequenceError, errors.KeyNotFoundError):
            # nats-py reads the key after a create that lost; the other write
            # may be gone by then (deleted, expired): either way, not created.
            return None

    async def update(self, key: str, value: dict[str, Any], revision: int) -> int | None:
        """Set ``key`` if its revision is still ``revision``; the new revision,
        or None if another write came first."""
        try:
            return int(await self.backend.call(self._kv.update, key, _encode(value), revision))
        except _nats().js.errors.KeyWrongLastSequenceError:
            return None

    async def put(self, key: str, value: dict[str, Any]) -> int:
        """Set ``key`` whatever its revision; the new revision."""
        return int(await self.backend.call(self._kv.put, key, _encode(value)))

    async def delete(self, key: str, revision: int | None = None) -> bool:
        """Delete ``key`` (only at ``revision``, if given); False if another
        write came first."""
        try:
            await self.backend.call(self._kv.delete, key, revision)
        except _nats().js.errors.BadRequestError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                return False
            raise
        return True

    async def delete_at(self, key: str, revision: int) -> int | None:
        """Delete ``key`` only at ``revision``; the delete marker's revision
        (a later ``update(key, value, marker)`` writes over it in one round
        trip), or None if another write came first."""
        js = self.backend.jetstream()
        headers = {"KV-Operation": "DEL", "Nats-Expected-Last-Subject-Sequence": str(revision)}
        subject = f"$KV.{self.bucket}.{key}"
        try:
            ack = await self.backend.call(js.publish, subject, b"", None, None, headers)
        except _nats().js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                return None
            raise
        return int(ack.seq)

    async def keys(self) -> list[str]:
        """Every key with a value now."""
        try:
            return list(await self.backend.call(self._kv.keys))
        except _nats().js.errors.NoKeysError:
            return []


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class NatsBackend:
    """A NATS connection with JetStream, for KV buckets.

    Args:
        url: ``nats://host:port`` (credentials in the URL are passed on).
        op_timeout: seconds one call may take.
        name: the connection's name, as the server shows it.
        reconnect: whether nats-py reconnects by itself after a lost
            connection, keeping the subscriptions (and buffering publishes
            meanwhile); without it, the next call connects again and
            subscriptions end with the connection.
        options: more keyword arguments of ``nats.connect`` (credentials
            file, TLS context, ...).
    """

    def __init__(
        self,
        url: str,
        *,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        name: str = "runtime",
        reconnect: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.op_timeout = op_timeout
        self.name = name
        self.reconnect = reconnect
        self.options = dict(options or {})
        self._client: Any = None
        self._js: Any = None
        self._buckets: dict[str, NatsKV] = {}
        self._lock = trio.Lock()
        self._replies: _Replies | None = None
        self._replies_lock = trio.Lock()
        self._pending_limit = int(self.options.get("pending_size", NATS_PENDING_SIZE))

    async def _connected(self) -> Any:
        """The JetStream context, connecting first if need be."""
        if self._client is not None and self._client.is_connected:
            return self._js
        async with self._lock:
            if self._client is not None and self._client.is_connected:
                return self._js
            if self._client is not None and self._client.is_reconnecting:
                raise BackendUnavailable(f"NATS at {redacted(self.url)}: reconnecting")
            await self._close_client()
            reconnect: dict[str, Any] = (
                {"allow_reconnect": True, "max_reconnect_attempts": -1, "reconnect_time_wait": 0.2}
                if self.reconnect
                # nats-py reads 0 as "no limit" and retries a refused first
                # connect forever: one retry, at once, then NoServersError
                # (the next call connects anew).
                else {
                    "allow_reconnect": False,
                    "max_reconnect_attempts": 1,
                    "reconnect_time_wait": 0,
                }
            )
            try:
                with trio.fail_after(self.op_timeout * 2):
                    client = await trio_asyncio.aio_as_trio(_nats().connect)(
                        self.url,
                        name=self.name,
                        connect_timeout=self.op_timeout,
                        error_cb=_quiet,
                        disconnected_cb=_quiet_event,
                        closed_cb=_quiet_event,
                        pending_size=self._pending_limit,
                        **reconnect,
                        **{k: v for k, v in self.options.items() if k != "pending_size"},
                    )
            except nats_unreachable() as exc:
                raise BackendUnavailable(f"NATS at {redacted(self.url)}: {exc!r}") from exc
            self._client = client
            self._js = client.jetstream(timeout=self.op_timeout)
            self._buckets.clear()
            return self._js

    def jetstream(self) -> Any:
        """The JetStream context of the current connection (after ``kv()``)."""
        if self._js is None:
            raise BackendUnavailable(f"NATS at {redacted(self.url)}: not connected")
        return self._js

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on asyncio, within ``op_timeout``."""
        try:
            with trio.fail_after(self.op_timeout):
                result: T = await trio_asyncio.aio_as_trio(fn)(*args)
                return result
        except _nats_answers():
            raise  # the engine answered: not an outage
        except nats_unreachable() as exc:
            raise BackendUnavailable(f"NATS at {redacted(self.url)}: {exc!r}") from exc

    async def kv(self, bucket: str, *, ttl: float | None = None, history: int = 1) -> NatsKV:
        """The KV bucket ``bucket``, made if it does not exist.

        Args:
            ttl: seconds a value lives after its last write (the engine
                removes it then); None: forever. A bucket that exists keeps
                its own setting.
            history: values kept per key.
        """
        js = await self._connected()
        found = self._buckets.get(bucket)
        if found is not None:
            return found
        try:
            kv = await self.call(js.key_value, bucket)
        except _nats().js.errors.BucketNotFoundError:
            kv = await self._create_bucket(js, bucket, ttl, history)
        handle = NatsKV(self, bucket, kv)
        self._buckets[bucket] = handle
        return handle

    async def _create_bucket(self, js: Any, bucket: str, ttl: float | None, history: int) -> Any:
        async def create() -> Any:
            return await js.create_key_value(bucket=bucket, ttl=ttl, history=history)

        return await self.call(create)

    async def client(self) -> Any:
        """The connected nats-py client (connecting first if need be)."""
        await self._connected()
        return self._client

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None, reply: str = ""
    ) -> None:
        """Publish ``data`` on ``subject`` (at most once: nobody may listen).

        The message goes into nats-py's buffer from this task, in the order
        of the calls; nats-py's flusher writes the buffer out in the
        background, so this waits neither for the network nor for asyncio
        (unless the buffer is nearly full: then for the flush).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        client = self._client
        if client is None or not client.is_connected:
            client = await self.client()
        try:
            if client.pending_data_size + len(data) + PUBLISH_HEADROOM < self._pending_limit:
                await run_inline(client.publish(subject, data, reply, headers), self.op_timeout)
            else:
                with trio.fail_after(self.op_timeout):
                    await trio_asyncio.aio_as_trio(client.publish)(subject, data, reply, headers)
        except nats_unreachable() as exc:
            raise BackendUnavailable(f"NATS at {redacted(self.url)}: {exc!r}") from exc

    async def request(
        self, subject: str, data: bytes, timeout: float, headers: dict[str, str] | None = None
    ) -> bytes:
        """Send ``data`` to one subscriber of ``subject`` and return its reply.

        The reply comes to this connection's inbox subscription, which hands
        it to the waiting task directly (no asyncio task per request).

        Raises:
            NoResponders: nobody is subscribed to ``subject`` now.
            TimeoutError: no reply within ``timeout`` seconds.
            BackendUnavailable: the server cannot be reached.
        """
        replies = self._replies
        if replies is None or replies.client is not self._client or not replies.client.is_connected:
            replies = await self._reply_inbox()
        token, waiter = replies.expect()
        try:
            with trio.move_on_after(timeout):
                await self.publish(subject, data, headers, replies.prefix + token)
                await waiter.event.wait()
        finally:
            replies.waiting.pop(token, None)
        message = waiter.message
        if message is None:
            raise TimeoutError(f"no reply on {subject} within {timeout}s")
        status = message.headers.get(_nats().js.api.Header.STATUS) if message.headers else None
        if status == _NO_RESPONDERS:
            raise NoResponders(subject)
        return bytes(message.data)

    async def _reply_inbox(self) -> _Replies:
        """The inbox of the current connection's requests, subscribed once."""
        async with self._replies_lock:
            client = await self.client()
            replies = self._replies
            if replies is not None and replies.client is client:
                return replies
            replies = _Replies(client, client.new_inbox() + ".")
            await self.call(client.subscribe, replies.prefix + "*", "", replies.deliver)
            self._replies = replies
            return replies

    async def subscribe(
        self, subject: str, *, queue: str = "", capacity: int = 256
    ) -> NatsSubscription:
        """Messages on ``subject`` (a wildcard subject too) as a trio channel.

        ``queue`` names a queue group: each message goes to one member of
        the group. The channel holds ``capacity`` messages; when it is full,
        nats-py's delivery for this subscription waits until the reader
        takes one (backpressure, nothing dropped by the bridge; the server
        buffers behind it up to its slow-consumer limits).
        """
        client = await self.client()
        send, receive = trio.open_memory_channel[Any](capacity)
        ours: NatsSubscription | None = None

        async def deliver(message: Any) -> None:
            # nats-py calls this on asyncio, in the trio run's own thread.
            try:
                try:
                    send.send_nowait(message)
                except trio.WouldBlock:
                    await trio_asyncio.trio_as_aio(send.send)(message)
            except trio.ClosedResourceError:
                # Unsubscribed while the message was on its way: a request
                # gets the refusal, if one was given, from here (on asyncio).
                refusal = None if ours is None else ours.refusal
                if refusal is not None and message.reply:
                    with contextlib.suppress(Exception):  # the connection is closing
                        await client.publish(message.reply, refusal)

        subscription = await self.call(client.subscribe, subject, queue, deliver)
        ours = NatsSubscription(self, subscription, send, receive)
        return ours

    async def ensure_stream(self, stream: str, subjects: list[str]) -> None:
        """Make the work-queue stream ``stream`` over ``subjects`` if it does
        not exist (file storage; a message is removed once acknowledged)."""
        js = await self._connected()
        errors = _nats().js.errors
        with contextlib.suppress(errors.NotFoundError):
            await self.call(js.stream_info, stream)
            return
        api = _nats().js.api
        config = api.StreamConfig(
            name=stream,
            subjects=subjects,
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
        )
        try:
            await self.call(js.add_stream, config)
        except errors.BadRequestError:
            # Made by another process meanwhile (the same config is no error;
            # a config that differs is reported by stream_info's caller).
            await self.call(js.stream_info, stream)

    async def stream_publish(self, subject: str, data: bytes) -> int:
        """Publish ``data`` on a stream's ``subject`` and wait for the stream
        to store it; its stream sequence.

        Raises:
            BackendUnavailable: the server or the stream did not answer in time.
        """
        js = await self._connected()
        ack = await self.call(js.publish, subject, data)
        return int(ack.seq)

    async def pull_consumer(
        self,
        stream: str,
        name: str,
        subject: str,
        *,
        ack_wait: float,
        max_ack_pending: int,
    ) -> NatsPullConsumer:
        """A fresh durable pull consumer ``name`` of ``subject`` in ``stream``,
        replacing any consumer of that subject (its messages not acknowledged
        are delivered again, from the oldest, in stream order).

        Messages are delivered to it in stream order; one not acknowledged
        within ``ack_wait`` seconds is delivered again. Nothing limits the
        deliveries on the server: the caller counts attempts.
        """
        js = await self._connected()
        for info in await self.call(js.consumers_info, stream):
            if info.config.filter_subject == subject:
                with contextlib.suppress(_nats().js.errors.NotFoundError):
                    await self.call(js.delete_consumer, stream, info.name)
        api = _nats().js.api
        config = api.ConsumerConfig(
            durable_name=name,
            filter_subject=subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
        )
        await self.call(js.add_consumer, stream, config)

        async def bind() -> Any:
            return await js.pull_subscribe_bind(name, stream)

        return NatsPullConsumer(self, await self.call(bind))

    async def delete_stream(self, stream: str) -> None:
        """Remove ``stream`` and its messages (tests and tools)."""
        js = await self._connected()
        with contextlib.suppress(_nats().js.errors.NotFoundError):
            await self.call(js.delete_stream, stream)

    async def delete_bucket(self, bucket: str) -> None:
        """Remove ``bucket`` and every key in it (tests and tools)."""
        js = await self._connected()
        self._buckets.pop(bucket, None)
        with contextlib.suppress(_nats().js.errors.NotFoundError):
            await self.call(js.delete_key_value, bucket)

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        self._replies = None
        if client is not None:
            try:
                with trio.move_on_after(self.op_timeout):
                    await trio_asyncio.aio_as_trio(client.close)()
            except Exception:  # a lost connection has nothing left to close
                pass

    async def aclose(self) -> None:
        """Close the connection."""
        async with self._lock:
            await self._close_client()
            self._buckets.clear()


_NO_RESPONDERS = "503"
"""The status the server answers a request with when nobody is subscribed."""


class _Reply:
    """One request waiting for its reply."""

    __slots__ = ("event", "message")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.message: Any = None


class _Replies:
    """The replies to one connection's requests: one subscription to
    ``prefix*``, each request waiting on its own token."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.waiting: dict[str, _Reply] = {}
        self._tokens = itertools.count()

    def expect(self) -> tuple[str, _Reply]:
        token = format(next(self._tokens), "x")
        waiter = self.waiting[token] = _Reply()
        return token, waiter

    async def deliver(self, message: Any) -> None:
        # nats-py calls this on asyncio, in the trio run's own thread.
        waiter = self.waiting.pop(message.subject[len(self.prefix) :], None)
        if waiter is not None:
            waiter.message = message
            waiter.event.set()


class NatsSubscription:
    """One NATS subscription, read from trio: ``async for message in sub.messages``
    (nats-py ``Msg``: ``subject``, ``data``, ``headers``, ``reply``)."""

    def __init__(
        self,
        backend: NatsBackend,
        subscription: Any,
        send: trio.MemorySendChannel[Any],
        receive: trio.MemoryReceiveChannel[Any],
    ) -> None:
        self.backend = backend
        self.messages = receive
        self._subscription = subscription
        self._send = send
        self.refusal: bytes | None = None

    async def reply(self, message: Any, data: bytes) -> None:
        """Answer a request ``message`` (nothing happens for a plain publish)."""
        if message.reply:
            await self.backend.publish(message.reply, data)

    async def unsubscribe(self, refusal: bytes | None = None) -> None:
        """Stop receiving; the channel ends once the messages in it are read.

        With ``refusal``, nobody reads the channel any more, and every
        request not read yet is answered with it at once, rather than left
        to its asker's timeout: those in the channel, those nats-py holds
        and those the server sent before it saw the unsubscription (the
        subscription is drained: one round trip). Plain messages among them
        are dropped.
        """
        self.refusal = refusal
        self._send.close()
        if refusal is None:
            with contextlib.suppress(Exception):  # a closed connection ended it already
                await self.backend.call(self._subscription.unsubscribe)
            return
        while True:
            try:
                message = self.messages.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if message.reply:
                with contextlib.suppress(BackendUnavailable):
                    await self.backend.publish(message.reply, refusal)
        with contextlib.suppress(Exception):  # a closed connection ended it already
            await self.backend.call(self._subscription.drain)


class NatsPullConsumer:
    """A JetStream pull consumer, read from trio: ``fetch`` a batch, then
    ``ack``, ``term`` or ``in_progress`` each message (nats-py ``Msg``:
    ``data``, ``metadata.sequence.stream``, ``metadata.num_delivered``)."""

    def __init__(self, backend: NatsBackend, subscription: Any) -> None:
        self.backend = backend
        self._subscription = subscription

    async def fetch(self, batch: int, wait: float) -> list[Any]:
        """Up to ``batch`` messages, waiting up to ``wait`` seconds for the
        first; an empty list when none came.

        Raises:
            BackendUnavailable: the server cannot be reached, or the consumer
                is gone (another node replaced it).
        """
        nats = _nats()
        try:
            with trio.fail_after(wait + self.backend.op_timeout):
                return list(await trio_asyncio.aio_as_trio(self._subscription.fetch)(batch, wait))
        except nats.errors.TimeoutError:
            return []
        except (*nats_unreachable(), nats.js.errors.Error) as exc:
            raise BackendUnavailable(f"NATS at {redacted(self.backend.url)}: {exc!r}") from exc

    async def ack(self, message: Any) -> None:
        """Acknowledge ``message``: the stream removes it."""
        await self.backend.call(message.ack)

    async def ack_all(self, messages: list[Any]) -> None:
        """Acknowledge each of ``messages`` (one call into asyncio for all)."""

        async def ack_each() -> None:
            for message in messages:
                await message.ack()

        await self.backend.call(ack_each)

    async def term(self, message: Any) -> None:
        """Never deliver ``message`` again."""
        await self.backend.call(message.term)

    async def in_progress(self, message: Any) -> None:
        """``message`` is still being handled: restart its ``ack_wait``."""
        await self.backend.call(message.in_progress)

    async def aclose(self) -> None:
        """Stop pulling (the consumer stays on the server for its next owner)."""
        with contextlib.suppress(Exception):  # a closed connection ended it already
            await self.backend.call(self._subscription.unsubscribe)


async def _quiet(_error: Exception) -> None:
    """nats-py's error callback: the caller sees every failure as an error of
    its own call, so nothing is printed or logged here."""


async def _quiet_event() -> None:
    """nats-py's connection callbacks: nothing to do."""


class PostgresBackend:
    """An asyncpg pool, called from trio.

    Args:
        url: ``postgresql://...`` (libpq's ``options=-csearch_path=...``
            selects a schema).
        op_timeout: seconds one call may take.
        max_connections: connections in the pool.
    """

    def __init__(
        self, url: str, *, op_timeout: float = DEFAULT_OP_TIMEOUT, max_connections: int = 4
    ) -> None:
        self.url = url
        self.op_timeout = op_timeout
        self.max_connections = max_connections
        self._pool: Any = None
        self._lock = trio.Lock()
        self._migrations: list[Callable[[Any], Awaitable[None]]] = []
        self._migrated = 0  # how many of _migrations the pool has run

    def migrate_with(self, migration: Callable[[Any], Awaitable[None]]) -> None:
        """Run ``migration(connection)`` (an asyncio coroutine function) on
        every new pool, before it is used: ``CREATE TABLE IF NOT EXISTS``."""
        if migration not in self._migrations:
            self._migrations.append(migration)

    async def _connected(self) -> Any:
        if self._pool is not None and self._migrated == len(self._migrations):
            return self._pool
        async with self._lock:
            if self._pool is None:
                try:
                    with trio.fail_after(self.op_timeout * 2):
                        self._pool = await trio_asyncio.aio_as_trio(asyncpg.create_pool)(
                            self.url,
                            min_size=1,
                            max_size=self.max_connections,
                            timeout=self.op_timeout,
                        )
                except _PG_DOWN as exc:
                    raise BackendUnavailable(
                        f"PostgreSQL at {redacted(self.url)}: {exc!r}"
                    ) from exc
                self._migrated = 0
            pending = self._migrations[self._migrated :]
            if pending:
                pool = self._pool

                async def migrate() -> None:
                    async with pool.acquire() as connection:
                        for migration in pending:
                            await migration(connection)

                await self._call_on_pool(migrate)
                self._migrated += len(pending)
            return self._pool

    async def _call_on_pool(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            with trio.fail_after(self.op_timeout):
                result: T = await trio_asyncio.aio_as_trio(fn)()
                return result
        except _PG_DOWN as exc:
            raise BackendUnavailable(f"PostgreSQL at {redacted(self.url)}: {exc!r}") from exc

    async def run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``await fn(connection)`` on asyncio with a pooled connection,
        within ``op_timeout``: the body of a transaction, a query or several.

        ``fn`` is an asyncio coroutine function (asyncpg's API as it is);
        open ``connection.transaction()`` in it for a transaction.
        """
        pool = await self._connected()

        async def body() -> T:
            async with pool.acquire() as connection:
                return await fn(connection)

        return await self._call_on_pool(body)

    async def aclose(self) -> None:
        """Close the pool."""
        async with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                with trio.move_on_after(self.op_timeout):
                    await trio_asyncio.aio_as_trio(pool.close)()
                pool.terminate()


class _Unbounded:
    """The thread limiter of a SQLite file's calls (trio takes anything with
    these two methods): the file's lock already lets one call run at a time,
    so its token is never waited for, where trio's default limiter would
    add a schedule point to every call and bound nothing more."""

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        pass

    def release_on_behalf_of(self, borrower: object) -> None:
        pass


_ONE_BY_ONE = cast(trio.CapacityLimiter, _Unbounded())


class SqliteFile:
    """A SQLite file in WAL mode (``synchronous=NORMAL`` unless told), on one connection
    used from worker threads one call at a time (a trio lock orders them),
    so the trio thread never waits on the disk.

    Args:
        file: the file; it and its directory are made on first use.
        schema: statements run once when the connection is made
            (``CREATE TABLE IF NOT EXISTS``).
        busy_timeout: seconds a call waits for another process's write
            transaction before it fails.
        synchronous: SQLite's ``synchronous`` level (``normal`` or ``full``).
        unavailable: the exception a call that fails on the file raises
            (locked, unopenable, full: it is there, or will be, later), made
            from a message; the error is its ``__cause__``.
    """

    def __init__(
        self,
        file: str | os.PathLike[str],
        schema: Sequence[str],
        *,
        busy_timeout: float = 30.0,
        synchronous: str = "normal",
        unavailable: Callable[[str], Exception] = BackendUnavailable,
    ) -> None:
        self.file = Path(file)
        self.synchronous = synchronous
        self.unavailable = unavailable
        self.schema = tuple(schema)
        self.busy_timeout = busy_timeout
        self._connection: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    def connection(self) -> sqlite3.Connection:
        """The connection, made on first use (call it in the worker thread)."""
        if self._connection is None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.file,
                check_same_thread=False,
                isolation_level=None,
                timeout=self.busy_timeout,
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            for statement in self.schema:
                connection.execute(statement)
            self._connection = connection
        return self._connection

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, after the calls before it. The
        thread is not cancelled: once started, the call returns its result
        (or raises its error) even when the caller is cancelled meanwhile;
        cancellation stops it only before it starts."""
        lock = self._lock
        try:
            # Free: taken without a schedule point of its own (the thread's
            # call is one, and checks for cancellation first).
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=_ONE_BY_ONE)
        except (sqlite3.OperationalError, OSError) as exc:
            raise self.unavailable(f"sqlite:///{self.file}: {exc}") from exc
        finally:
            lock.release()

    async def aclose(self) -> None:
        """Close the connection (the next call opens it again)."""
        async with self._lock:
            if self._connection is not None:
                connection, self._connection = self._connection, None
                await trio.to_thread.run_sync(connection.close)


class Backends:
    """One connection per engine URL for a system, made on first use and
    closed together."""

    def __init__(self, *, name: str = "runtime") -> None:
        self.name = name
        self._nats: dict[str, NatsBackend] = {}
        self._postgres: dict[str, PostgresBackend] = {}

    def nats(self, url: str) -> NatsBackend:
        """The NATS connection for ``url`` (it connects on first use)."""
        backend = self._nats.get(url)
        if backend is None:
            backend = self._nats[url] = NatsBackend(url, name=self.name)
        return backend

    def postgres(self, url: str) -> PostgresBackend:
        """The PostgreSQL pool for ``url`` (it connects on first use)."""
        backend = self._postgres.get(url)
        if backend is None:
            backend = self._postgres[url] = PostgresBackend(url)
        return backend

    async def aclose(self) -> None:
        """Close every connection."""
        backends: list[NatsBackend | PostgresBackend] = [
            *self._nats.values(),
            *self._postgres.values(),
        ]
        self._nats.clear()
        self._postgres.clear()
        for backend in backends:
            await backend.aclose()
