"""The core's layers run one way (DESIGN 6.1): no import cycle, no upward import.

Imports are read from the source (``TYPE_CHECKING`` and function-level
imports included), so a cycle hidden behind ``if TYPE_CHECKING:`` fails too.
Every module of the package must have a layer here: a new module is placed
deliberately, not by accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import runtime

PACKAGE = Path(runtime.__file__).parent

# Lowest first. A module may import only modules of a strictly lower layer.
LAYERS: list[set[str]] = [
    # Leaves: plain data and helpers that know nothing of actors.
    {"errors", "_correlation", "_priority", "_durations", "_tracing", "_listen", "_yaml"},
    {"_logging", "_specs", "_breaker", "_outage", "_backends", "_routing"},
    # Mechanisms: mailbox, checkpoint stores and lifecycle, the fake LLM backend.
    {"_mailbox", "_checkpoint", "_fake_llm", "_lock_backends", "_shared"},
    {"_limiter", "_ref", "_locks", "_budget"},
    # The tree's view of the system, and an incarnation's view of its cell.
    {"_host"},
    {"_context", "_serving"},
    {"_actor"},
    {"_cell", "_remote"},
    {"_resource", "_supervisor", "_durable_cell"},
    {"_pool"},
    {"resources.postgres", "resources.llm", "resources.mcp"},
    # Workflows: steps asked of agents found by path, journaled in the store.
    {"workflow"},
    {"_topology", "_envcheck"},
    {"_system"},
    # A cluster node's durable mailboxes and topics, on NATS JetStream.
    {"_durable", "_cluster_topics"},
    {"_cluster"},
    {"_health"},
    {"_metrics", "_endpoint"},
    # The live console: /ui's routes, served by the endpoint.
    {"_console"},
    {"_services"},
    # The audit (a tool of the command line), from its rules up to its command.
    {"_audit.rules"},
    {"_audit.pyindex", "_audit.baseline"},
    {"_audit.fanout", "_audit.topology", "_audit.ruff"},
    {"_audit.pychecks"},
    {"_audit.scan"},
    {"_audit.report"},
    {"_audit.command"},
    {"_status", "testing", "resources", "_audit"},
    {"_cli"},
    {"__init__", "__main__"},
]


def _modules() -> dict[str, Path]:
    modules = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        modules[".".join(parts)] = file
    return modules


def _imports(name: str, file: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source."""
    package = (
        name.split(".")[:-1]
        if file.name != "__init__.py" or name == "__init__"
        else name.split(".")
    )
    if name == "__init__":
        package = []
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").startswith("runtime"):
                target = (node.module or "").removeprefix("runtime").lstrip(".")
            else:
                continue
            for candidate in (target, *(f"{target}.{a.name}".lstrip(".") for a in node.names)):
                if candidate in known and candidate != name:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("runtime."):
                    candidate = alias.name.removeprefix("runtime.")
                    if candidate in known:
                        found.add(candidate)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, file, set(modules)) for name, file in modules.items()}


def test_every_module_has_a_layer() -> None:
    """A module missing from LAYERS is reported, so none escapes the check."""
    placed = set().union(*LAYERS)
    assert set(_graph()) - placed == set()
    assert placed - set(_graph()) == set(), "LAYERS names modules that do not exist"


def test_imports_only_go_down() -> None:
    """No module imports one of its own layer or above (TYPE_CHECKING included)."""
    rank = {name: index for index, layer in enumerate(LAYERS) for name in layer}
    upward = [
        f"{name} (layer {rank[name]}) imports {target} (layer {rank[target]})"
        for name, targets in _graph().items()
        for target in targets
        if rank[target] >= rank[name]
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    """Depth-first search finds no cycle in the package's import graph."""
    graph = _graph()
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(name: str) -> None:
        visiting.append(name)
        for target in sorted(graph[name]):
            if target in visiting:
                cycles.append([*visiting[visiting.index(target) :], target])
            elif target not in done:
                visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name)
    assert cycles == []


def test_specs_import_nothing_of_the_runtime() -> None:
    """Specs are plain data: the same in code and YAML, importable alone."""
    assert _graph()["_specs"] == set()


def test_no_module_reaches_a_private_name_of_another() -> None:
    """``from ._x import _private`` across modules is how layers tangle."""
    offenders = []
    for name, file in _modules().items():
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and (
                node.level or "runtime" in (node.module or "")
            ):
                offenders += [
                    f"{name}: {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert offenders == []
