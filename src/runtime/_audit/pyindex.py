"""One walk over a module's syntax tree: what its names are bound to, and
the calls and statements the rules look at, each with its scope.

The walk is iterative (deeply nested expressions do not exhaust the
recursion limit) and records instead of judging: whether a call is a
problem often depends on something defined later in the file (the spawned
function, a semaphore made at the bottom), so the rules run on the records
once the whole module is known.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable, Iterator
from typing import TypeAlias

import attrs

__all__ = [
    "CLIENT_CTORS",
    "COMPREHENSIONS",
    "LOOPS",
    "SPAWN_ATTRS",
    "SYNC_CLIENT_CTORS",
    "FunctionNode",
    "Hit",
    "ModuleIndex",
    "Scope",
    "channel_bound",
    "children",
    "index_module",
    "is_infinite",
    "is_limiter_name",
    "limits",
    "terminal",
]

FunctionNode: TypeAlias = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
LOOPS = (ast.For, ast.AsyncFor, ast.While, *COMPREHENSIONS)

SPAWN_ATTRS = frozenset({"create_task", "ensure_future", "start_soon", "spawn_system_task"})
"""Calls that start a task: asyncio's, a TaskGroup's, a trio nursery's, anyio's."""

LIMITER_CTORS = frozenset(
    {
        "Semaphore",
        "BoundedSemaphore",
        "CapacityLimiter",
        "Lock",
        "StrictFIFOLock",
        "Limiter",
        "AsyncLimiter",
        "RateLimiter",
        "Throttler",
    }
)
_LIMITER_NAME = re.compile(r"sem|limit|throttl|lock|slot|permit|bucket|mutex", re.IGNORECASE)

TASK_GROUP_CTORS = frozenset({"TaskGroup", "open_nursery", "create_task_group"})
LOOP_CTORS = frozenset({"get_event_loop", "get_running_loop", "new_event_loop"})

BOUNDED_CHANNEL_CTORS = frozenset(
    {"Queue", "LifoQueue", "PriorityQueue", "open_memory_channel", "create_memory_object_stream"}
)
THREAD_QUEUES = frozenset(
    {"queue.Queue", "queue.LifoQueue", "queue.PriorityQueue", "queue.SimpleQueue"}
)

CLIENT_CTORS = frozenset(
    {
        "aiohttp.ClientSession",
        "httpx.AsyncClient",
        "httpx.Client",
        "asyncpg.create_pool",
        "asyncpg.connect",
        "openai.AsyncOpenAI",
        "openai.AsyncAzureOpenAI",
        "anthropic.AsyncAnthropic",
        "anthropic.AsyncAnthropicBedrock",
        "anthropic.AsyncAnthropicVertex",
    }
)
"""What holds connections and must be closed (RT601)."""

SYNC_CLIENT_CTORS = frozenset(
    {
        "openai.OpenAI",
        "openai.AzureOpenAI",
        "anthropic.Anthropic",
        "anthropic.AnthropicBedrock",
        "anthropic.AnthropicVertex",
        "sqlite3.connect",
        "psycopg2.connect",
        "psycopg.connect",
        "pymysql.connect",
        "MySQLdb.connect",
        "redis.Redis",
        "redis.StrictRedis",
        "redis.from_url",
        "redis.Redis.from_url",
        "pymongo.MongoClient",
    }
)
"""Blocking LLM and database clients (RT801)."""


def terminal(node: ast.expr) -> str | None:
    """The last identifier of a name, attribute or call (``b`` of ``a.b``,
    of ``a.b(...)`` and of ``a.b[T](...)``)."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return node.attr
        if isinstance(node, ast.Call | ast.Subscript):
            node = node.func if isinstance(node, ast.Call) else node.value
            continue
        return None


def channel_bound(call: ast.Call) -> float | None:
    """The buffer a queue or memory channel is made with: its first argument
    or its ``maxsize`` / ``max_buffer_size``; ``math.inf`` for an infinite
    one, 0 when not given (unbounded for asyncio's queues, a rendezvous for
    channels), None when it is not a constant."""
    arg: ast.expr | None = call.args[0] if call.args else None
    for keyword in call.keywords:
        if keyword.arg in {"maxsize", "max_buffer_size"}:
            arg = keyword.value
        elif keyword.arg is None:
            return None  # **options
    if arg is None:
        return 0
    if is_infinite(arg):
        return math.inf
    sign = 1.0
    if isinstance(arg, ast.UnaryOp) and isinstance(arg.op, ast.USub):
        sign, arg = -1.0, arg.operand
    value = arg.value if isinstance(arg, ast.Constant) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return sign * value
    return None


def is_infinite(node: ast.expr) -> bool:
    """``math.inf``, ``numpy.inf``, ``float("inf")`` and ``float("infinity")``."""
    if isinstance(node, ast.Attribute | ast.Name):
        return terminal(node) == "inf"
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "float"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and str(node.args[0].value).strip().lower().lstrip("+") in {"inf", "infinity"}
    )


def is_limiter_name(name: str | None) -> bool:
    """Whether an identifier reads as a semaphore, limiter or lock."""
    return name is not None and _LIMITER_NAME.search(name) is not None


def children(node: ast.AST) -> Iterator[ast.AST]:
    """``ast.iter_child_nodes`` without its per-field generator overhead."""
    for field in node._fields:
        value = getattr(node, field, None)
        if isinstance(value, ast.AST):
            yield value
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, ast.AST):
                    yield item


@attrs.frozen
class Hit:
    """A rule's verdict on one node, before it becomes a ``Finding``."""

    node: ast.expr | ast.stmt
    rule: str
    message: str


def limits(expr: ast.expr, limiters: set[str]) -> bool:
    """Whether ``with expr:`` holds a limiter: a semaphore, limiter or lock
    (made there, bound to one of ``limiters``, or named so), a pool's
    ``acquire()``, or a runtime resource."""
    name = terminal(expr)
    if isinstance(expr, ast.Call):
        return name in LIMITER_CTORS or name in {"acquire", "resource"} or is_limiter_name(name)
    return name in limiters or is_limiter_name(name)


@attrs.frozen
class Scope:
    """Where a node sits: its function, and the loops and ``with`` items
    around it in that function (innermost last)."""

    func: FunctionNode | None = None
    is_async: bool = False
    loops: tuple[ast.AST, ...] = ()
    withs: tuple[ast.expr, ...] = ()


_MODULE = Scope()


@attrs.define
class ModuleIndex:
    """What one module binds, and what the rules look at, with their scopes."""

    tree: ast.Module
    aliases: dict[str, str] = attrs.field(factory=dict)
    functions: dict[str, list[FunctionNode]] = attrs.field(factory=dict)
    limiters: set[str] = attrs.field(factory=set)
    bounded_channels: set[str] = attrs.field(factory=set)
    thread_queues: set[str] = attrs.field(factory=set)
    task_groups: set[str] = attrs.field(factory=set)
    event_loops: set[str] = attrs.field(factory=set)
    sync_clients: set[str] = attrs.field(factory=set)
    awaited: set[int] = attrs.field(factory=set)
    calls: list[tuple[ast.Call, Scope]] = attrs.field(factory=list)
    statements: list[tuple[ast.Expr | ast.Assign, Scope]] = attrs.field(factory=list)
    client_assignments: list[tuple[str, ast.Call, FunctionNode]] = attrs.field(factory=list)
    decorated: list[ast.FunctionDef | ast.AsyncFunctionDef] = attrs.field(factory=list)

    def qualname(self, node: ast.expr) -> str | None:
        """The dotted name ``node`` refers to, through the module's imports:
        ``aio.Queue`` is ``asyncio.Queue`` after ``import asyncio as aio``."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Subscript):  # create_memory_object_stream[int](...)
            return self.qualname(node.value)
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.aliases.get(node.id, node.id))
        return ".".join(reversed(parts))


def _bound_names(target: ast.expr) -> Iterator[str]:
    """``x`` for ``x = ...`` and ``self.x = ...``, each name of ``x, y = ...``."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
        yield target.attr
    elif isinstance(target, ast.Tuple | ast.List):
        for item in target.elts:
            yield from _bound_names(item)


class _Walker:
    """Fills a ``ModuleIndex`` in one pass over the tree."""

    def __init__(self, index: ModuleIndex) -> None:
        self.index = index
        self.stack: list[tuple[ast.AST, Scope]] = []

    def run(self, tree: ast.Module) -> None:
        stack = self.stack
        stack.append((tree, _MODULE))
        pop, append = stack.pop, stack.append
        handlers = _HANDLERS
        fields = _CHILD_FIELDS
        node_type = ast.AST
        while stack:
            node, scope = pop()
            kind = node.__class__
            handler = handlers.get(kind)
            if handler is not None:
                handler(self, node, scope)
                continue
            names = fields.get(kind)
            if names is None:
                names = fields[kind] = tuple(f for f in kind._fields if f not in _LEAF_FIELDS)
            for name in names:
                value = getattr(node, name, None)
                if value.__class__ is list:
                    for item in value:
                        if isinstance(item, node_type):
                            append((item, scope))
                elif isinstance(value, node_type):
                    append((value, scope))

    def push(self, nodes: Iterable[ast.AST], scope: Scope) -> None:
        self.stack.extend([(node, scope) for node in nodes])

    def import_(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.Import)
        for alias in node.names:
            if alias.asname:
                self.index.aliases[alias.asname] = alias.name
            # `import a.b` binds `a`, which already names itself.

    def import_from(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.ImportFrom)
        if node.level or not node.module:
            return
        for alias in node.names:
            self.index.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def function(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        self.index.functions.setdefault(node.name, []).append(node)
        if node.decorator_list:
            self.index.decorated.append(node)
        inner = Scope(func=node, is_async=isinstance(node, ast.AsyncFunctionDef))
        self.push(node.decorator_list, scope)
        self.push([node.args], scope)
        self.push(node.body, inner)

    def lambda_(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.Lambda)
        self.push([node.args], scope)
        self.push([node.body], Scope(func=node))

    def for_(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.For | ast.AsyncFor)
        self.push([node.target, node.iter, *node.orelse], scope)
        self.push(node.body, attrs.evolve(scope, loops=(*scope.loops, node)))

    def while_(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.While)
        self.push(node.orelse, scope)
        self.push([node.test, *node.body], attrs.evolve(scope, loops=(*scope.loops, node)))

    def comprehension(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp)
        first, *rest = node.generators
        self.push([first.iter], scope)
        inner = attrs.evolve(scope, loops=(*scope.loops, node))
        elements = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        self.push([first.target, *first.ifs, *rest, *elements], inner)

    def with_(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.With | ast.AsyncWith)
        for item in node.items:
            expr = item.context_expr
            if (
                isinstance(expr, ast.Call)
                and terminal(expr) in TASK_GROUP_CTORS
                and isinstance(item.optional_vars, ast.Name)
            ):
                self.index.task_groups.add(item.optional_vars.id)
        self.push(node.items, scope)
        held = tuple(item.context_expr for item in node.items)
        self.push(node.body, attrs.evolve(scope, withs=(*scope.withs, *held)))

    def assign(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.Assign | ast.AnnAssign)
        value = node.value
        targets: list[ast.expr] = node.targets if isinstance(node, ast.Assign) else [node.target]
        call = value.value if isinstance(value, ast.Await) else value
        if isinstance(call, ast.Call):
            self.bind(targets, call, scope)
        if isinstance(node, ast.Assign):
            self.index.statements.append((node, scope))
        self.push(children(node), scope)

    def bind(self, targets: list[ast.expr], call: ast.Call, scope: Scope) -> None:
        """Remember names bound to limiters, channels, loops and clients."""
        index = self.index
        name = terminal(call.func)
        qualname = index.qualname(call.func) or ""
        names = [bound for target in targets for bound in _bound_names(target)]
        if name in LIMITER_CTORS:
            index.limiters.update(names)
        elif name in LOOP_CTORS:
            index.event_loops.update(names)
        elif qualname in THREAD_QUEUES:
            index.thread_queues.update(names)
        elif name in BOUNDED_CHANNEL_CTORS and channel_bound(call) not in {None, 0, math.inf}:
            index.bounded_channels.update(names)
        if qualname in SYNC_CLIENT_CTORS and (
            scope.func is None or isinstance(targets[0], ast.Attribute)
        ):
            index.sync_clients.update(names)
        if (
            qualname in CLIENT_CTORS
            and scope.func is not None
            and len(targets) == 1
            and isinstance(targets[0], ast.Name)
        ):
            index.client_assignments.append((targets[0].id, call, scope.func))

    def expr_statement(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.Expr)
        self.index.statements.append((node, scope))
        self.push([node.value], scope)

    def await_(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.Await)
        self.index.awaited.add(id(node.value))
        self.push([node.value], scope)

    def call(self, node: ast.AST, scope: Scope) -> None:
        assert isinstance(node, ast.Call)
        self.index.calls.append((node, scope))
        self.push(children(node), scope)


# Fields that hold no node worth a visit: contexts and operators are
# singletons, the rest are strings and constants.
_LEAF_FIELDS = frozenset({"ctx", "op", "ops", "type_comment", "kind", "id", "attr", "arg"})
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}

_HANDLERS = {
    ast.Import: _Walker.import_,
    ast.ImportFrom: _Walker.import_from,
    ast.FunctionDef: _Walker.function,
    ast.AsyncFunctionDef: _Walker.function,
    ast.Lambda: _Walker.lambda_,
    ast.For: _Walker.for_,
    ast.AsyncFor: _Walker.for_,
    ast.While: _Walker.while_,
    ast.ListComp: _Walker.comprehension,
    ast.SetComp: _Walker.comprehension,
    ast.GeneratorExp: _Walker.comprehension,
    ast.DictComp: _Walker.comprehension,
    ast.With: _Walker.with_,
    ast.AsyncWith: _Walker.with_,
    ast.Assign: _Walker.assign,
    ast.AnnAssign: _Walker.assign,
    ast.Expr: _Walker.expr_statement,
    ast.Await: _Walker.await_,
    ast.Call: _Walker.call,
}


def index_module(tree: ast.Module) -> ModuleIndex:
    """Walk ``tree`` once and return what it binds and what to check."""
    index = ModuleIndex(tree)
    walker = _Walker(index)
    for statement in _top_level(tree.body):  # names bound below need the imports above
        if isinstance(statement, ast.Import):
            walker.import_(statement, _MODULE)
        elif isinstance(statement, ast.ImportFrom):
            walker.import_from(statement, _MODULE)
    walker.run(tree)
    return index


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The module's statements, through ``if``, ``try`` and ``with`` blocks."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.If | ast.With):
            yield from _top_level(statement.body)
            if isinstance(statement, ast.If):
                yield from _top_level(statement.orelse)
        elif isinstance(statement, ast.Try | ast.TryStar):
            for block in (statement.body, statement.orelse, statement.finalbody):
                yield from _top_level(block)
            for handler in statement.handlers:
                yield from _top_level(handler.body)
