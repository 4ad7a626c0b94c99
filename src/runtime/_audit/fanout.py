"""RT1xx: fan-out with no bound in reach.

A fan-out starts one coroutine or task per item of something that can grow
(``asyncio.gather(*(fetch(u) for u in urls))``, ``create_task`` or
``start_soon`` in a loop). It is reported unless a bound is in reach:

- the fan-out sits inside ``with``/``async with`` a semaphore, limiter,
  lock, a pool's ``acquire()`` or a runtime resource;
- the spawned function (resolved by name in the same module, through up
  to three local calls) acquires one, asks a runtime resource
  (``ctx.resource(...)``, ``.ask(...)``), or is given a limiter as an
  argument;
- the loop acquires one, or awaits its tasks (``asyncio.wait``, ``gather``,
  ``await task``), or awaits a send into a bounded queue or channel;
- the awaitable closes, stops or drains something already held;
- the loop runs over something fixed: a literal tuple or list, ``range`` of
  at most 100 literal items or of a count named as a pool's size
  (``range(workers)``, ``range(CONCURRENCY)``), a slice, or a name that
  reads as a batch or chunk.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from .pyindex import (
    COMPREHENSIONS,
    LOOPS,
    SPAWN_ATTRS,
    FunctionNode,
    Hit,
    ModuleIndex,
    Scope,
    children,
    is_limiter_name,
    limits,
    terminal,
)

__all__ = ["MAX_FIXED_RANGE", "fanout_hits"]

MAX_FIXED_RANGE = 100
"""``range(n)`` with a literal ``n`` up to this is a fixed number of items."""

_GATHERS = {"asyncio.gather", "asyncio.wait", "asyncio.as_completed"}
_BATCH = re.compile(r"batch|chunk|window|slice|sample", re.IGNORECASE)
_POOL = re.compile(
    r"worker|concurren|parallel|pool|limit|max_|slot|consumer|thread|process|shard", re.IGNORECASE
)
_WRAPPERS = {"wait_for", "shield", "timeout", "create_task", "ensure_future"}
_BOUND_CALLS = {"acquire", "acquire_on_behalf_of", "resource", "ask", "tell"}
_JOINS = {"wait", "gather", "join", "as_completed"}
# Tearing down what one already holds is not new work per item.
_TEARDOWN = {"close", "aclose", "stop", "cancel", "drain", "shutdown", "terminate", "wait_closed"}
_MAX_DEPTH = 3


def fanout_hits(index: ModuleIndex) -> Iterator[Hit]:
    """Every unbounded fan-out in the module ``index`` describes."""
    checker = _FanOut(index)
    for call, scope in index.calls:
        name = terminal(call.func)
        if name in SPAWN_ATTRS:
            hit = checker.spawn(call, scope)
        elif name in {"gather", "wait", "as_completed"}:
            hit = checker.gather(call, scope)
        else:
            continue
        if hit is not None:
            yield hit


def _text(node: ast.AST, limit: int = 48) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _body_nodes(root: ast.AST) -> Iterator[tuple[ast.AST, ast.AST | None]]:
    """Each node below ``root`` with its innermost loop below ``root``, not
    entering nested functions or classes."""
    stack: list[tuple[ast.AST, ast.AST | None]] = [(child, None) for child in children(root)]
    while stack:
        node, loop = stack.pop()
        yield node, loop
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        inner = node if isinstance(node, LOOPS) else loop
        stack.extend((child, inner) for child in children(node))


def _range_is_fixed(call: ast.Call) -> bool:
    """``range`` of literals up to ``MAX_FIXED_RANGE`` items, or of a count
    named as a pool's size (``range(workers)``, ``range(CONCURRENCY)``);
    ``range(len(items))`` and ``range(pages)`` grow with the data."""
    values = [
        arg.value for arg in call.args if isinstance(arg, ast.Constant) and type(arg.value) is int
    ]
    if len(values) == len(call.args):
        try:
            return len(range(*values)) <= MAX_FIXED_RANGE
        except (TypeError, ValueError):
            return False
    return all(_is_count(arg) for arg in call.args)


def _is_count(node: ast.expr) -> bool:
    """Whether ``node`` reads as a pool's size: a literal, a constant in
    capitals, a name such as ``workers`` or ``max_concurrency``, arithmetic
    on those, or ``min`` with one of them."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.BinOp):
        return _is_count(node.left) and _is_count(node.right)
    if isinstance(node, ast.Call):
        return terminal(node.func) == "min" and any(_is_count(arg) for arg in node.args)
    name = terminal(node) if isinstance(node, ast.Name | ast.Attribute) else None
    return name is not None and (name.isupper() or _POOL.search(name) is not None)


def is_fixed(node: ast.expr) -> bool:
    """Whether iterating ``node`` yields a fixed, small number of items."""
    if isinstance(node, ast.Call):
        return _call_is_fixed(node)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return not any(isinstance(item, ast.Starred) for item in node.elts)
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Slice)
    name = terminal(node)
    return isinstance(node, ast.Dict | ast.Constant) or (
        name is not None and _BATCH.search(name) is not None
    )


def _call_is_fixed(node: ast.Call) -> bool:
    name = terminal(node.func)
    if name == "range":
        return _range_is_fixed(node)
    if name == "zip":
        return any(is_fixed(arg) for arg in node.args)
    if name in {"enumerate", "reversed", "sorted", "list", "tuple", "set", "iter"}:
        return bool(node.args) and is_fixed(node.args[0])
    return (
        name in {"items", "keys", "values"}
        and isinstance(node.func, ast.Attribute)
        and is_fixed(node.func.value)
    )


class _FanOut:
    def __init__(self, index: ModuleIndex) -> None:
        self.index = index
        self.bounded_functions: dict[int, bool] = {}
        self.bounded_loops: dict[int, bool] = {}

    # The fan-out sites.

    def spawn(self, call: ast.Call, scope: Scope) -> Hit | None:
        """RT102: a task started inside a loop or comprehension."""
        if not scope.loops or self.held(scope):
            return None
        loop = scope.loops[-1]
        if self.loop_is_fixed(loop) or any(self.loop_limits(outer) for outer in scope.loops):
            return None
        if self.spawned_is_bounded(call):
            return None
        spawner = _text(call.func, 40)
        message = (
            f"{spawner}() starts a task per item of {self.describe(loop)}, with no semaphore, "
            "limiter, bounded channel or runtime resource in reach"
        )
        return Hit(call, "RT102", message)

    def gather(self, call: ast.Call, scope: Scope) -> Hit | None:
        """RT101: gather/wait/as_completed over a comprehension or a list built in a loop."""
        qualname = self.index.qualname(call.func)
        if qualname not in _GATHERS or self.held(scope):
            return None
        if qualname == "asyncio.gather":
            sources = [arg.value for arg in call.args if isinstance(arg, ast.Starred)]
        else:
            sources = call.args[:1] + [k.value for k in call.keywords if k.arg in {"fs", "aws"}]
        root: ast.AST = scope.func if scope.func is not None else self.index.tree
        for source in sources:
            found = self.fan_source(source, root, 0)
            if found is None:
                continue
            element, how = found
            if self.element_is_bounded(element):
                continue
            message = (
                f"{qualname}() over {how}: one coroutine per item, all at once, with no "
                "semaphore, limiter or runtime resource in reach"
            )
            return Hit(call, "RT101", message)
        return None

    # Where the awaitables come from.

    def fan_source(self, node: ast.expr, root: ast.AST, depth: int) -> tuple[ast.expr, str] | None:
        """The element and a description of a growing collection of
        awaitables ``node`` is, or None when it is fixed or unknown."""
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp):
            if all(is_fixed(generator.iter) for generator in node.generators):
                return None
            return node.elt, f"a comprehension of `{_text(node.generators[0].iter)}`"
        if isinstance(node, ast.Call):
            return self.call_source(node, root, depth)
        if isinstance(node, ast.Name) and depth < _MAX_DEPTH:
            return self.built(node.id, root, depth + 1)
        return None

    def call_source(self, node: ast.Call, root: ast.AST, depth: int) -> tuple[ast.expr, str] | None:
        """``map(f, items)``, or ``list(...)`` of a source."""
        name = terminal(node.func)
        if name in {"list", "tuple", "set"} and node.args:
            return self.fan_source(node.args[0], root, depth)
        if name != "map" or len(node.args) < 2 or all(is_fixed(arg) for arg in node.args[1:]):
            return None
        element = ast.Call(func=node.args[0], args=[], keywords=[])
        return element, f"map() of `{_text(node.args[1])}`"

    def built(self, name: str, root: ast.AST, depth: int) -> tuple[ast.expr, str] | None:
        """How the list ``name`` is filled in ``root``: from a comprehension,
        or item by item in a loop."""
        for node, loop in _body_nodes(root):
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == name for target in node.targets
            ):
                found = self.fan_source(node.value, root, depth)
                if found is not None:
                    return found
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                receiver = node.func.value
                if not (isinstance(receiver, ast.Name) and receiver.id == name) or not node.args:
                    continue
                if node.func.attr == "extend":
                    found = self.fan_source(node.args[0], root, depth)
                    if found is not None:
                        return found
                elif node.func.attr in {"append", "add"}:
                    found = self.filled(name, node.args[0], loop)
                    if found is not None:
                        return found
            elif (
                isinstance(node, ast.AugAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id == name
                and isinstance(node.value, ast.List | ast.Tuple)
                and len(node.value.elts) == 1
            ):
                found = self.filled(name, node.value.elts[0], loop)
                if found is not None:
                    return found
        return None

    def filled(
        self, name: str, element: ast.expr, loop: ast.AST | None
    ) -> tuple[ast.expr, str] | None:
        """``element`` added to ``name`` once per item of ``loop``, unless it is fixed."""
        if loop is None or self.loop_is_fixed(loop):
            return None
        return element, f"`{name}`, filled in a loop over {self.describe(loop)}"

    # Bounds in reach.

    def held(self, scope: Scope) -> bool:
        """Whether a ``with`` around the node holds a limiter."""
        return any(limits(expr, self.index.limiters) for expr in scope.withs)

    def loop_is_fixed(self, loop: ast.AST) -> bool:
        if isinstance(loop, ast.For | ast.AsyncFor):
            return is_fixed(loop.iter)
        if isinstance(loop, COMPREHENSIONS):
            return all(is_fixed(generator.iter) for generator in loop.generators)
        return False  # while

    def describe(self, loop: ast.AST) -> str:
        if isinstance(loop, ast.For | ast.AsyncFor):
            return f"`{_text(loop.iter)}`"
        if isinstance(loop, COMPREHENSIONS):
            return f"`{_text(loop.generators[0].iter)}`"
        return "a while loop"

    def loop_limits(self, loop: ast.AST) -> bool:
        """Whether the loop's body acquires a limiter, awaits its tasks, or
        awaits a send into a bounded channel."""
        if not isinstance(loop, ast.For | ast.AsyncFor | ast.While):
            return False
        known = self.bounded_loops.get(id(loop))
        if known is None:
            known = self.bounded_loops[id(loop)] = any(
                self.limits_here(node) for body in loop.body for node, _ in _body_nodes(body)
            ) or any(self.limits_here(node) for node in loop.body)
        return known

    def limits_here(self, node: ast.AST) -> bool:
        if isinstance(node, ast.With | ast.AsyncWith):
            return any(limits(item.context_expr, self.index.limiters) for item in node.items)
        if isinstance(node, ast.Call):
            return terminal(node.func) in {"acquire", "acquire_on_behalf_of"}
        return isinstance(node, ast.Await) and self.awaits_a_bound(node.value)

    def awaits_a_bound(self, value: ast.expr) -> bool:
        """Whether awaiting ``value`` in a loop keeps the loop's tasks
        bounded: a task made in the loop, a join of them, or a send into a
        bounded channel."""
        if isinstance(value, ast.Name):
            return True
        if not isinstance(value, ast.Call):
            return False
        name = terminal(value.func)
        if name in {"put", "send"} and isinstance(value.func, ast.Attribute):
            return terminal(value.func.value) in self.index.bounded_channels
        return name in _JOINS

    def spawned_is_bounded(self, call: ast.Call) -> bool:
        """Whether what ``call`` starts takes a limiter or uses a bound."""
        name = terminal(call.func)
        if not call.args:
            return False
        if name in {"start_soon", "spawn_system_task"}:
            return self.callable_is_bounded(call.args[0], call.args[1:])
        return self.element_is_bounded(call.args[0])

    def element_is_bounded(self, element: ast.expr) -> bool:
        """Whether the awaitable ``element`` is bounded; an element that is
        itself a spawned task is (RT102 reports the spawn), and so is one
        that is not a call (nothing to judge it by)."""
        if not isinstance(element, ast.Call):
            return not isinstance(element, ast.Name)
        name = terminal(element.func)
        if name in _TEARDOWN and isinstance(element.func, ast.Attribute):
            return True
        if name in _WRAPPERS and element.args:
            if name in SPAWN_ATTRS:
                return True
            return self.element_is_bounded(element.args[0])
        arguments = [*element.args, *(keyword.value for keyword in element.keywords)]
        return self.callable_is_bounded(element.func, arguments)

    def callable_is_bounded(self, func: ast.expr, arguments: list[ast.expr]) -> bool:
        if isinstance(func, ast.Call) and terminal(func.func) == "partial" and func.args:
            return self.callable_is_bounded(func.args[0], [*func.args[1:], *arguments])
        name = terminal(func)
        if name in _BOUND_CALLS:
            return True
        for argument in arguments:
            if isinstance(argument, ast.Name | ast.Attribute):
                held = terminal(argument)
                if held in self.index.limiters or is_limiter_name(held):
                    return True
        if name is None:
            return False
        return any(self.function_is_bounded(f, 0) for f in self.index.functions.get(name, ()))

    def function_is_bounded(self, function: FunctionNode, depth: int) -> bool:
        """Whether ``function``'s body holds a limiter or asks a runtime
        resource, directly or through local functions it calls."""
        known = self.bounded_functions.get(id(function))
        if known is not None:
            return known
        self.bounded_functions[id(function)] = False  # recursion ends here
        found = self.body_is_bounded(function, depth)
        self.bounded_functions[id(function)] = found
        return found

    def body_is_bounded(self, function: FunctionNode, depth: int) -> bool:
        if not isinstance(function, ast.Lambda):
            for decorator in function.decorator_list:
                if is_limiter_name(terminal(decorator)):
                    return True
        callees: list[str] = []
        for node in ast.walk(function):
            if isinstance(node, ast.With | ast.AsyncWith):
                if any(limits(item.context_expr, self.index.limiters) for item in node.items):
                    return True
            elif isinstance(node, ast.Call):
                name = terminal(node.func)
                if name in _BOUND_CALLS:
                    return True
                if name is not None and name in self.index.functions:
                    callees.append(name)
        if depth + 1 >= _MAX_DEPTH:
            return False
        return any(
            self.function_is_bounded(callee, depth + 1)
            for name in callees
            for callee in self.index.functions[name]
        )
