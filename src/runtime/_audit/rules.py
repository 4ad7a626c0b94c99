"""The audit's rules and findings: plain data, and how a finding is named
across line shifts (its fingerprint) and silenced (ignore comments).

Rule ids are stable once assigned; the hundreds group them:

- ``RT0xx``: the audit itself (a file that does not parse);
- ``RT1xx``: fan-out with no bound in reach;
- ``RT2xx``: unbounded queues and channels, thread queues in coroutines;
- ``RT3xx``: network and model clients with no timeout;
- ``RT4xx``: deprecated asyncio APIs;
- ``RT5xx``: tasks whose reference is dropped;
- ``RT6xx``: clients, sessions and pools never closed;
- ``RT7xx``: topology files;
- ``RT8xx``: blocking calls in coroutines that ruff's ``ASYNC`` rules do not
  cover (ruff's own findings keep their ids, such as ``ASYNC210``).
"""

from __future__ import annotations

import hashlib
import re

import attrs

__all__ = ["RULES", "Finding", "Rule", "fingerprint", "ignored_rules", "is_ignored"]


@attrs.frozen
class Rule:
    """One check: its id, a short name, what it finds, and the usual fix."""

    id: str
    name: str
    summary: str
    fix: str


_RULES = [
    Rule(
        "RT001",
        "syntax-error",
        "the file does not parse, so nothing in it was checked",
        "fix the syntax (or exclude the file: it may be a template or test data)",
    ),
    Rule(
        "RT101",
        "unbounded-gather",
        "asyncio.gather/wait/as_completed over a comprehension or a list built in a loop, "
        "with no semaphore, limiter or runtime resource in reach",
        "bound the concurrency: acquire an asyncio.Semaphore(n) / trio.CapacityLimiter(n) "
        "in the awaited coroutine, or ask a runtime resource (ctx.resource(name).ask(...)) "
        "whose max_concurrency bounds it",
    ),
    Rule(
        "RT102",
        "unbounded-spawn",
        "a task is started per item in a loop or comprehension (create_task, ensure_future, "
        "start_soon), with no semaphore, limiter, bounded channel or runtime resource in reach",
        "start a fixed pool of workers that read a bounded channel, or acquire a semaphore / "
        "CapacityLimiter in the spawned task (trio: nursery.start_soon under "
        "`async with limiter`), or send the work to a runtime resource",
    ),
    Rule(
        "RT201",
        "unbounded-queue",
        "asyncio.Queue (or LifoQueue, PriorityQueue) with no maxsize, or maxsize <= 0",
        "give the queue a maxsize, so that producers wait when consumers fall behind",
    ),
    Rule(
        "RT202",
        "unbounded-memory-channel",
        "trio.open_memory_channel / anyio.create_memory_object_stream with an infinite buffer",
        "give the channel a finite buffer (0 is a rendezvous), so that senders wait",
    ),
    Rule(
        "RT203",
        "thread-queue-in-coroutine",
        "a thread queue (queue.Queue) made in a coroutine, or its blocking get/put/join "
        "called in one: it blocks the event loop",
        "use asyncio.Queue(maxsize) / a trio memory channel in async code; from a thread, "
        "hand items over with loop.call_soon_threadsafe or trio.from_thread.run",
    ),
    Rule(
        "RT301",
        "httpx-no-timeout",
        "an httpx client or request with timeout=None: it may wait forever "
        "(httpx's own default is 5 s, so only an explicit None is reported)",
        "pass a finite timeout, e.g. httpx.Timeout(30.0, connect=5.0)",
    ),
    Rule(
        "RT302",
        "aiohttp-no-timeout",
        "an aiohttp ClientSession without timeout= (its default allows 5 minutes), or "
        "with a ClientTimeout that has no total",
        "pass timeout=aiohttp.ClientTimeout(total=30)",
    ),
    Rule(
        "RT303",
        "llm-client-no-timeout",
        "an OpenAI or Anthropic client without timeout= (their default is 10 minutes, "
        "retried), or with timeout=None",
        "pass timeout= (e.g. 60.0 or httpx.Timeout(60.0, connect=5.0)), or call the model "
        "through the runtime's llm resource, whose timeout bounds every attempt",
    ),
    Rule(
        "RT304",
        "asyncpg-no-command-timeout",
        "asyncpg.connect / create_pool without command_timeout: a query may run forever "
        "(timeout= bounds only connecting)",
        "pass command_timeout= (seconds), or use the runtime's postgres resource",
    ),
    Rule(
        "RT401",
        "get-event-loop-in-coroutine",
        "asyncio.get_event_loop() in a coroutine (deprecated there; it may create a loop)",
        "use asyncio.get_running_loop()",
    ),
    Rule(
        "RT402",
        "loop-argument",
        "a loop= argument to an asyncio function (removed in Python 3.10)",
        "drop loop=: asyncio uses the running loop",
    ),
    Rule(
        "RT403",
        "ensure-future-on-coroutine",
        "asyncio.ensure_future(coro()) on a coroutine call",
        "use asyncio.create_task(coro()) (and keep a reference to the task)",
    ),
    Rule(
        "RT404",
        "asyncio-coroutine-decorator",
        "@asyncio.coroutine (removed in Python 3.11)",
        "write `async def` and `await` instead of the decorator and `yield from`",
    ),
    Rule(
        "RT501",
        "dropped-task",
        "a task is created and its reference dropped: the event loop keeps only a weak "
        "reference, so it may be garbage-collected mid-run, and its exception is never seen",
        "keep the task (tasks = set(); tasks.add(t); t.add_done_callback(tasks.discard)), "
        "or start it in an asyncio.TaskGroup / trio nursery",
    ),
    Rule(
        "RT601",
        "unclosed-client",
        "a client, session or pool made in a function is never closed, entered with "
        "`async with`, returned or stored: its connections leak",
        "use `async with Client(...) as client:`, or close it in a finally block "
        "(await client.aclose() / close())",
    ),
    Rule(
        "RT701",
        "resource-no-timeout",
        "a topology resource with timeout: null: an attempt may hang forever",
        "give the resource a timeout (the default is 30s), e.g. timeout: 60s",
    ),
    Rule(
        "RT702",
        "llm-resource-no-rate",
        "an llm resource with no rate: nothing keeps it under the provider's quota",
        "add rate: {requests: N, period: 1m} matching the provider's limit",
    ),
    Rule(
        "RT703",
        "mailbox-too-large",
        "a mailbox capacity over 10,000: a backlog that large hides overload instead of "
        "pushing back",
        "keep capacity small (the default is 100) and let overflow: block push back on senders",
    ),
    Rule(
        "RT801",
        "sync-client-in-coroutine",
        "a blocking (synchronous) LLM or database client made or called in a coroutine "
        "(OpenAI(), Anthropic(), sqlite3/psycopg2/pymysql connections, redis.Redis, "
        "pymongo): each call blocks the event loop",
        "use the async client (AsyncOpenAI, AsyncAnthropic, asyncpg, redis.asyncio), or the "
        "runtime's llm / postgres resource",
    ),
]

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}
"""Every rule of the audit by id (ruff's ``ASYNC`` rules are not listed)."""


@attrs.frozen
class Finding:
    """One problem found: where (1-based line and column), which rule, what, and the fix.

    ``text`` is the source line, kept to fingerprint the finding; ``tool`` is
    ``runtime`` or ``ruff``.
    """

    path: str
    line: int
    col: int
    rule: str
    message: str
    fix: str
    text: str = ""
    tool: str = "runtime"


def fingerprint(finding: Finding) -> str:
    """A name for ``finding`` that survives lines moving: its file, rule and
    source line with whitespace collapsed, hashed."""
    normal = " ".join(finding.text.split())
    key = "\0".join((finding.path, finding.rule, normal))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:20]


_IGNORE = re.compile(r"#\s*runtime:\s*ignore\b(?:\[([^\]]*)\])?")


def ignored_rules(line: str) -> frozenset[str] | None:
    """The rule ids a ``# runtime: ignore[RT101, RT203]`` comment on ``line``
    silences; an empty set for a bare ``# runtime: ignore`` (all of them);
    None when the line has no such comment."""
    if "runtime:" not in line:
        return None
    found = _IGNORE.search(line)
    if found is None:
        return None
    if found.group(1) is None:
        return frozenset()
    return frozenset(part.strip() for part in found.group(1).split(",") if part.strip())


def is_ignored(finding: Finding) -> bool:
    """Whether the comment on the finding's line silences its rule."""
    rules = ignored_rules(finding.text)
    return rules is not None and (not rules or finding.rule in rules)
