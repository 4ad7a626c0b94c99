"""The audit of one Python file: RT1xx (``fanout``) and every other
Python rule (RT2xx to RT6xx, RT801), from one walk of its syntax tree."""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Iterator

from .fanout import fanout_hits
from .pyindex import (
    SYNC_CLIENT_CTORS,
    FunctionNode,
    Hit,
    ModuleIndex,
    Scope,
    channel_bound,
    index_module,
    terminal,
)
from .rules import RULES, Finding

__all__ = ["check_python"]

_ASYNCIO_QUEUES = {"asyncio.Queue", "asyncio.LifoQueue", "asyncio.PriorityQueue"}
_MEMORY_CHANNELS = {"trio.open_memory_channel", "anyio.create_memory_object_stream"}
_THREAD_QUEUES = {"queue.Queue", "queue.LifoQueue", "queue.PriorityQueue", "queue.SimpleQueue"}
_HTTPX = {
    f"httpx.{name}"
    for name in (
        "AsyncClient",
        "Client",
        "get",
        "post",
        "put",
        "patch",
        "delete",
        "head",
        "options",
        "request",
        "stream",
    )
}
_LLM_CLIENTS = {
    "openai.AsyncOpenAI",
    "openai.OpenAI",
    "openai.AsyncAzureOpenAI",
    "openai.AzureOpenAI",
    "anthropic.AsyncAnthropic",
    "anthropic.Anthropic",
    "anthropic.AsyncAnthropicBedrock",
    "anthropic.AnthropicBedrock",
    "anthropic.AsyncAnthropicVertex",
    "anthropic.AnthropicVertex",
}
_ASYNCPG = {"asyncpg.connect", "asyncpg.create_pool"}
# The functions and classes Python 3.10 removed loop= from (Future, Task,
# ensure_future and run_coroutine_threadsafe keep it).
_LOOP_REMOVED = {
    "sleep",
    "gather",
    "shield",
    "wait_for",
    "wait",
    "as_completed",
    "Queue",
    "LifoQueue",
    "PriorityQueue",
    "Lock",
    "Event",
    "Condition",
    "Semaphore",
    "BoundedSemaphore",
    "open_connection",
    "start_server",
    "open_unix_connection",
    "start_unix_server",
    "create_subprocess_exec",
    "create_subprocess_shell",
}
_JUDGED = (
    _ASYNCIO_QUEUES
    | _MEMORY_CHANNELS
    | _THREAD_QUEUES
    | _HTTPX
    | {"aiohttp.ClientSession"}
    | _LLM_CLIENTS
    | _ASYNCPG
    | SYNC_CLIENT_CTORS
)
# What ensure_future is given that is already a future, not a coroutine.
_FUTURES = {
    "gather",
    "shield",
    "wrap_future",
    "run_in_executor",
    "create_future",
    "Future",
    "create_task",
    "ensure_future",
}
_CLOSERS = {"close", "aclose", "terminate", "shutdown", "release", "disconnect", "__aexit__"}
_OWNERS = {
    "enter_async_context",
    "enter_context",
    "push_async_exit",
    "push_async_callback",
    "callback",
    "aclosing",
    "closing",
    "append",
    "add",
    "setdefault",
    "register",
    "setattr",
}


def check_python(path: str, text: str) -> list[Finding]:
    """Every finding of the audit's Python rules in ``text`` (the file at
    ``path``), sorted by position; one RT001 finding if it does not parse."""
    lines = text.splitlines()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in old code are not ours to report
            tree = ast.parse(text, filename=path)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        line = getattr(exc, "lineno", None) or 1
        col = getattr(exc, "offset", None) or 1
        reason = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        source = lines[line - 1] if 0 < line <= len(lines) else ""
        rule = RULES["RT001"]
        return [Finding(path, line, col, "RT001", f"syntax error: {reason}", rule.fix, source)]
    index = index_module(tree)
    hits = [*fanout_hits(index), *_Rules(index).hits()]
    findings = []
    for hit in hits:
        node = hit.node
        line = node.lineno
        source = lines[line - 1] if 0 < line <= len(lines) else ""
        rule = RULES[hit.rule]
        findings.append(
            Finding(path, line, node.col_offset + 1, hit.rule, hit.message, rule.fix, source)
        )
    findings.sort(key=lambda finding: (finding.line, finding.col, finding.rule))
    return findings


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _has_splat(call: ast.Call) -> bool:
    """Whether the call passes ``**options``, which may hold any keyword."""
    return any(keyword.arg is None for keyword in call.keywords)


def _no_timeout(call: ast.Call, name: str) -> bool:
    """Whether ``call`` passes no ``name`` keyword (nor ``**options`` that may
    hold it), or passes None."""
    timeout = _keyword(call, name)
    return (timeout is None and not _has_splat(call)) or _is_none(timeout)


def _is_none(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _short(qualname: str) -> str:
    return qualname.rsplit(".", 1)[-1]


class _Rules:
    """RT2xx to RT6xx and RT801 over one module's index."""

    def __init__(self, index: ModuleIndex) -> None:
        self.index = index
        self.chained: set[int] = set()  # calls inside a chain already judged whole

    def hits(self) -> Iterator[Hit]:
        index = self.index
        for call, scope in index.calls:
            qualname = index.qualname(call.func)
            if qualname is not None:
                yield from self.call(call, qualname, scope)
            if scope.is_async:
                yield from self.blocking(call, qualname)
        for statement, scope in index.statements:
            hit = self.dropped_task(statement, scope)
            if hit is not None:
                yield hit
        for name, call, function in index.client_assignments:
            if not _is_released(name, function):
                qualname = index.qualname(call.func) or "client"
                message = (
                    f"`{name} = {_short(qualname)}(...)` is never closed, entered with "
                    "`async with`, returned or stored: its connections leak"
                )
                yield Hit(call, "RT601", message)
        for function in index.decorated:
            for decorator in function.decorator_list:
                if index.qualname(decorator) in {
                    "asyncio.coroutine",
                    "asyncio.coroutines.coroutine",
                }:
                    message = f"@asyncio.coroutine on {function.name}() (removed in Python 3.11)"
                    yield Hit(decorator, "RT404", message)

    def call(self, call: ast.Call, qualname: str, scope: Scope) -> Iterator[Hit]:
        if qualname.startswith("asyncio."):
            if _short(qualname) in _LOOP_REMOVED and _keyword(call, "loop") is not None:
                yield Hit(call, "RT402", f"loop= passed to {qualname}() (removed in Python 3.10)")
            yield from self.deprecated(call, qualname, scope)
        if qualname not in _JUDGED:
            return
        yield from self.queues(call, qualname, scope)
        yield from self.timeouts(call, qualname)
        if qualname in SYNC_CLIENT_CTORS and scope.is_async:
            yield Hit(
                call,
                "RT801",
                f"{qualname}() in a coroutine: a blocking client, each call stalls the event loop",
            )

    def queues(self, call: ast.Call, qualname: str, scope: Scope) -> Iterator[Hit]:
        """RT201 to RT203."""
        if qualname in _ASYNCIO_QUEUES:
            bound = channel_bound(call)
            if bound is not None and bound <= 0:
                yield Hit(call, "RT201", f"{qualname}() with no maxsize: it grows without bound")
        elif qualname in _MEMORY_CHANNELS and channel_bound(call) == math.inf:
            yield Hit(
                call, "RT202", f"{qualname}() with an infinite buffer: it grows without bound"
            )
        elif qualname in _THREAD_QUEUES and scope.is_async:
            yield Hit(
                call,
                "RT203",
                f"{qualname}() made in a coroutine: its get()/put() block the event loop",
            )

    def timeouts(self, call: ast.Call, qualname: str) -> Iterator[Hit]:
        """RT301 to RT304."""
        if qualname in _HTTPX:
            yield from self.httpx(call, qualname)
        elif qualname == "aiohttp.ClientSession":
            yield from self.aiohttp(call)
        elif qualname in _LLM_CLIENTS and _no_timeout(call, "timeout"):
            yield Hit(
                call,
                "RT303",
                f"{qualname}() without a timeout: a call may wait 10 minutes (the SDK's "
                "default), and is retried",
            )
        elif qualname in _ASYNCPG and _no_timeout(call, "command_timeout"):
            yield Hit(
                call, "RT304", f"{qualname}() without command_timeout: a query may run forever"
            )

    def deprecated(self, call: ast.Call, qualname: str, scope: Scope) -> Iterator[Hit]:
        """RT401 and RT403."""
        if qualname == "asyncio.get_event_loop" and scope.is_async:
            yield Hit(
                call, "RT401", "asyncio.get_event_loop() in a coroutine: use get_running_loop()"
            )
        elif qualname == "asyncio.ensure_future" and call.args:
            argument = call.args[0]
            if isinstance(argument, ast.Call) and terminal(argument.func) not in _FUTURES:
                yield Hit(
                    call,
                    "RT403",
                    f"asyncio.ensure_future({_short(ast.unparse(argument.func))}(...)) on a "
                    "coroutine: use asyncio.create_task",
                )

    def httpx(self, call: ast.Call, qualname: str) -> Iterator[Hit]:
        timeout = _keyword(call, "timeout")
        if timeout is None:
            return  # httpx's default is 5 seconds
        if _is_none(timeout) or (
            isinstance(timeout, ast.Call)
            and terminal(timeout.func) == "Timeout"
            and not timeout.keywords
            and len(timeout.args) == 1
            and _is_none(timeout.args[0])
        ):
            yield Hit(call, "RT301", f"{qualname}(timeout=None): it may wait forever")

    def aiohttp(self, call: ast.Call) -> Iterator[Hit]:
        timeout = _keyword(call, "timeout")
        if timeout is None:
            if not _has_splat(call):
                yield Hit(
                    call,
                    "RT302",
                    "aiohttp.ClientSession() without timeout=: a request may take 5 minutes "
                    "(the default)",
                )
            return
        total = None
        if isinstance(timeout, ast.Call) and terminal(timeout.func) == "ClientTimeout":
            total = timeout.args[0] if timeout.args else _keyword(timeout, "total")
            others = [k for k in timeout.keywords if k.arg not in {"total", "connect"}]
            if (total is None or _is_none(total)) and not others and not _has_splat(timeout):
                yield Hit(
                    call,
                    "RT302",
                    "aiohttp.ClientSession(timeout=ClientTimeout()) with no total or read "
                    "timeout: a request may wait forever",
                )
        elif _is_none(timeout):
            yield Hit(
                call, "RT302", "aiohttp.ClientSession(timeout=None): a request may wait forever"
            )

    def blocking(self, call: ast.Call, qualname: str | None) -> Iterator[Hit]:
        """RT203 and RT801 at a call in a coroutine through a name bound to a
        thread queue or a blocking client (an awaited call is not blocking)."""
        func = call.func
        if not isinstance(func, ast.Attribute) or id(call) in self.chained:
            return
        root = _receiver(func.value, self.chained)
        if id(call) in self.index.awaited:
            return
        if root is None:
            return
        name = terminal(root)
        if name in self.index.thread_queues and func.value is root:
            if func.attr in {"get", "put", "join"} and not _non_blocking(call):
                yield Hit(
                    call,
                    "RT203",
                    f"{ast.unparse(func)}() on a thread queue in a coroutine blocks the event loop",
                )
        elif name in self.index.sync_clients and qualname not in SYNC_CLIENT_CTORS:
            yield Hit(
                call,
                "RT801",
                f"{_short_call(func)}() through the blocking client `{name}` in a coroutine "
                "stalls the event loop",
            )

    def dropped_task(self, statement: ast.Expr | ast.Assign, scope: Scope) -> Hit | None:
        """RT501: ``create_task(...)`` as a statement, or assigned to ``_``."""
        if isinstance(statement, ast.Assign) and not all(
            isinstance(t, ast.Name) and t.id == "_" for t in statement.targets
        ):
            return None
        value = statement.value
        while (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Call)
            and value.func.attr == "add_done_callback"
        ):
            value = value.func.value  # create_task(...).add_done_callback(...)
        if not isinstance(value, ast.Call) or not self.makes_task(value):
            return None
        return Hit(
            value,
            "RT501",
            f"the task {_short_call(value.func)}() returns is dropped: it may be "
            "garbage-collected before it ends, and its exception is never seen",
        )

    def makes_task(self, call: ast.Call) -> bool:
        qualname = self.index.qualname(call.func)
        if qualname in {"asyncio.create_task", "asyncio.ensure_future"}:
            return True
        func = call.func
        if not isinstance(func, ast.Attribute) or func.attr not in {"create_task", "ensure_future"}:
            return False
        receiver = terminal(func.value)
        if receiver is None or receiver in self.index.task_groups:
            return False
        if isinstance(func.value, ast.Call):
            return receiver in {"get_event_loop", "get_running_loop"}
        return receiver in self.index.event_loops or "loop" in receiver.lower()


def _short_call(func: ast.expr) -> str:
    text = ast.unparse(func)
    return text if len(text) <= 48 else "..." + text[-45:]


def _receiver(node: ast.expr, inner: set[int]) -> ast.Name | ast.Attribute | None:
    """The object a chain of attributes and calls starts from: ``client`` of
    ``client.chat.completions.create``, ``self.client`` of
    ``self.client.with_options(...).messages``. The calls along the chain
    are added to ``inner``."""
    while True:
        if isinstance(node, ast.Call):
            inner.add(id(node))
            node = node.func
        elif isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}:
                return node
            node = node.value
        elif isinstance(node, ast.Name):
            return node
        else:
            return None


def _non_blocking(call: ast.Call) -> bool:
    block = _keyword(call, "block")
    if isinstance(block, ast.Constant) and block.value is False:
        return True
    timeout = _keyword(call, "timeout")
    return isinstance(timeout, ast.Constant) and timeout.value == 0


def _mentions(node: ast.AST, name: str) -> bool:
    """Whether ``name`` appears in ``node`` as a value of its own, not only
    as the object of an attribute (``aclosing(client)``, not ``client.get``)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Name) and current.id == name:
            return True
        if isinstance(current, ast.Attribute) and isinstance(current.value, ast.Name):
            continue
        stack.extend(ast.iter_child_nodes(current))
    return False


def _holds(node: ast.expr, name: str) -> bool:
    """Whether the value of ``node`` is ``name`` or holds it: the name, a
    literal container of it, or an object made from it (``Api(client)``, a
    class by its capital). ``fetch(client)`` is a result, not the client."""
    if isinstance(node, ast.Name):
        return node.id == name
    if isinstance(node, ast.Starred):
        return _holds(node.value, name)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_holds(item, name) for item in node.elts)
    if isinstance(node, ast.Dict):
        return any(_holds(value, name) for value in node.values)
    if isinstance(node, ast.Call):
        maker = terminal(node.func) or ""
        arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
        return maker[:1].isupper() and any(_holds(argument, name) for argument in arguments)
    return False


def _is_released(name: str, function: FunctionNode) -> bool:
    """Whether the client bound to ``name`` in ``function`` is closed, entered
    with ``with``, handed to an owner, returned, yielded or stored."""
    for node in ast.walk(function):
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == name and node.attr in _CLOSERS:
                return True  # called, or registered as a callback
        elif isinstance(node, ast.With | ast.AsyncWith):
            if any(_mentions(item.context_expr, name) for item in node.items):
                return True
        elif isinstance(node, ast.Return | ast.Yield | ast.YieldFrom | ast.Assign | ast.AnnAssign):
            if node.value is not None and _holds(node.value, name):
                return True
        elif isinstance(node, ast.Call):
            if terminal(node.func) in _OWNERS and any(
                _holds(argument, name) for argument in node.args
            ):
                return True
        elif isinstance(node, ast.Global | ast.Nonlocal) and name in node.names:
            return True
    return False
