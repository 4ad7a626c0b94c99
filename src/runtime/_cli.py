"""``python -m runtime``: start or validate a topology, run one of its
workflows, show a running system's status, or audit code for unbounded
concurrency.

Exit codes:
    0: the system ran and stopped gracefully (``start``; with ``--until-idle``,
       once idle with every counted item done and no circuit left open), the
       topology is valid (``validate``), the system runs (``status``), the
       workflow run succeeded (``run``), nothing new was found (``audit``).
    1: the system failed: a top supervisor gave up, or starting it failed
       (``start``, ``run``); it is not running or cannot be reached
       (``status``); the workflow run failed (``run``); new findings
       (``audit``).
    2: usage error, or an invalid topology (errors on stderr); for
       ``validate`` also what this machine's environment lacks for a
       resource to start (an API key's variable, a server command); for
       ``run`` an unknown workflow or inputs that do not fit it; for
       ``audit`` a path or baseline that cannot be read.
    3: ``start --until-idle``: the system went idle with work left undone:
       fewer items done than counted (``ctx.progress``), a circuit left
       open, or a workflow run parked as ``needs_attention``. It was stopped
       gracefully. ``run``: the workflow run needs
       attention (a step's results were refused by its ``validate`` and its
       fallbacks are used up).
    4: ``start --max-time``: the time ran out; the system was stopped gracefully.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TextIO

import attrs
import trio

from ._audit import add_audit_parser, run_audit
from ._budget import BudgetStatistics
from ._envcheck import environment_problems
from ._health import Problem, health_of
from ._listen import parse_listen
from ._logging import configure_logging
from ._resource import ResourceStatistics
from ._services import open_system
from ._specs import Topology, to_seconds
from ._status import show_status, table
from ._system import ActorSystem, Progress, TreeNode
from ._topology import iter_children, load_topology
from .errors import ActorSystemError, TopologyError
from .workflow import WorkflowResult

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNFINISHED = 3
EXIT_TIME_UP = 4


@attrs.frozen
class RunEnd:
    """How ``start`` ended its run by itself (not on a signal).

    Attributes:
        reason: ``idle`` (``--until-idle``) or ``time`` (``--max-time`` passed).
        circuits: with ``idle``, the actors whose circuit was open or
            half-open then, each as ``path (state)``.
        limit: with ``time``, the ``--max-time`` in seconds.
        attention: with ``idle``, the workflow runs parked as
            ``needs_attention`` then, each as ``workflow/run_id``.
    """

    reason: str
    circuits: tuple[str, ...] = ()
    limit: float = 0.0
    attention: tuple[str, ...] = ()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime",
        description=(
            "A supervised actor runtime on trio: start or validate a topology, run "
            "one of its workflows, show a running system's status, or audit code for "
            "unbounded concurrency."
        ),
        epilog=(
            "Exit codes: 0 ok, 1 the system (or the workflow run) failed (audit: new "
            "findings), 2 usage error or invalid topology, 3 idle with work left undone "
            "(start --until-idle) or a workflow run that needs attention (run), "
            "4 the time ran out (start --max-time)."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = commands.add_parser(
        "start",
        help="start a topology and run it until SIGINT/SIGTERM",
        description=(
            "Start the supervision tree in TOPOLOGY and run it until SIGINT or SIGTERM, "
            "then stop it gracefully (children in reverse start order). A second signal "
            "cancels whatever is still stopping. SIGHUP re-reads TOPOLOGY and applies "
            "resource limits live."
        ),
        epilog=(
            "Exit codes: 0 stopped gracefully (with --until-idle: idle, every counted "
            "item done, no circuit open), 1 the system failed, 2 invalid topology, "
            "3 idle with items not done, a circuit left open or a workflow run needing "
            "attention, 4 --max-time passed."
        ),
    )
    start.add_argument("topology", metavar="TOPOLOGY", help="path to topology.yaml")
    start.add_argument(
        "--until-idle",
        action="store_true",
        help=(
            "stop once the system is idle: every mailbox empty, and no handler, restart, "
            "one-shot timer or ctx.nursery task pending (exit 3 if items counted with "
            "ctx.progress are not all done, a circuit is left open, or a workflow run "
            "needs attention)"
        ),
    )
    start.add_argument(
        "--max-time",
        metavar="DURATION",
        type=_max_time,
        help="stop gracefully once DURATION (90s, 5m, 1h) has passed, and exit 4",
    )
    start.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help=(
            "serve /metrics, /healthz, /readyz, /status and the console /ui there (overrides "
            "the topology's metrics.listen; a port alone binds to 127.0.0.1)"
        ),
    )
    start.add_argument(
        "--progress-interval",
        metavar="SECONDS",
        type=float,
        default=1.0,
        help=(
            "print a progress line (items done, who is working) on stdout this often, "
            "when it changed; 0 prints none (default: 1)"
        ),
    )
    start.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help=(
            "log format on stderr; auto is console on a terminal, JSON otherwise "
            "(on the console a crash is one line, its traceback left out)"
        ),
    )
    start.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="least severe log level written (default: info); debug adds tracebacks on the console",
    )
    start.add_argument(
        "--node",
        metavar="NAME",
        help=(
            "with cluster: in the topology, this node's name, unique in the cluster "
            "(default: hostname-pid)"
        ),
    )
    start.add_argument(
        "--no-env-checks",
        action="store_true",
        help=(
            "do not warn about what the environment lacks for a resource to start "
            "(an unset api_key_env variable, an MCP command not on PATH)"
        ),
    )
    validate = commands.add_parser(
        "validate",
        help="check a topology without starting it",
        description=(
            "Check TOPOLOGY: YAML syntax, every field, and that each actor class imports, "
            "is a runtime.Actor, has well-formed handlers and accepts its args; then that "
            "this machine's environment has what each resource needs to start (an "
            "api_key_env variable set, an MCP command on PATH)."
        ),
        epilog=(
            "Exit codes: 0 valid, 2 invalid or the environment lacks something "
            "(one line per problem on stderr)."
        ),
    )
    validate.add_argument("topology", metavar="TOPOLOGY", help="path to topology.yaml")
    validate.add_argument(
        "--no-env-checks",
        action="store_true",
        help="check the file only, not this machine's environment (to validate for another one)",
    )
    run = commands.add_parser(
        "run",
        help="start a topology, run one of its workflows, and stop",
        description=(
            "Start TOPOLOGY, run its workflow WORKFLOW (a template under workflows:) with "
            "the given inputs, print a table of its steps, and stop gracefully. With the "
            "--run-id of an earlier run, the steps that succeeded then (in the run's "
            "journal in the checkpoint store) are not run again."
        ),
        epilog=(
            "Exit codes: 0 the run succeeded, 1 it failed (or the system did), 2 invalid "
            "topology, unknown workflow or bad inputs, 3 the run needs attention."
        ),
    )
    run.add_argument("topology", metavar="TOPOLOGY", help="path to topology.yaml")
    run.add_argument("workflow", metavar="WORKFLOW", help="the workflow's name in TOPOLOGY")
    run.add_argument(
        "--input",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a value for the template's input NAME (repeat for each input)",
    )
    run.add_argument(
        "--run-id",
        metavar="ID",
        help="the run's id: an earlier run's to resume it (default: a new id, printed first)",
    )
    run.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="log format on stderr (as for start)",
    )
    run.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="least severe log level written (default: warning)",
    )
    status = commands.add_parser(
        "status",
        help="show a running system's supervision tree from its /status endpoint",
        description=(
            "Fetch URL/status from a running system's metrics endpoint (metrics.listen) "
            "and print its supervision tree and resources as a table."
        ),
        epilog="Exit codes: 0 the system runs, 1 it is not running or not reachable.",
    )
    status.add_argument(
        "url", metavar="URL", help="the endpoint, such as http://127.0.0.1:9464 (or 9464)"
    )
    add_audit_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # actors are imported relative to the working dir
    if args.command == "validate":
        return _validate(args.topology, env_checks=not args.no_env_checks)
    if args.command == "status":
        return show_status(args.url)
    if args.command == "audit":
        return run_audit(args)
    configure_logging(fmt=args.log_format, level=args.log_level)
    if args.command == "run":
        return trio.run(_run_workflow, args.topology, args.workflow, args.input, args.run_id)
    return trio.run(
        functools.partial(
            _start,
            args.topology,
            args.until_idle,
            args.metrics_listen,
            args.progress_interval,
            env_checks=not args.no_env_checks,
            max_time=args.max_time,
            node=args.node,
        )
    )


async def _run_workflow(
    path: str, name: str, assignments: Sequence[str], run_id: str | None
) -> int:
    """``run``: the system started, one run of workflow ``name``, its step table."""
    topology = _load(path)
    inputs = _inputs(assignments)
    if topology is None or inputs is None:
        return EXIT_INVALID
    if name not in topology.workflows:
        declared = ", ".join(sorted(topology.workflows)) or "none"
        print(f"error: {path} has no workflow {name!r}; it has: {declared}", file=sys.stderr)
        return EXIT_INVALID
    run_id = run_id if run_id is not None else secrets.token_hex(6)
    try:
        async with open_system(topology) as system:
            try:
                workflow = system.workflow(name, **inputs)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_INVALID
            print(f"run {name} {run_id}; checkpoint store: {system.store_url}", flush=True)
            result = await system.run_workflow(workflow, run_id=run_id)
    except TopologyError as exc:
        _print_errors(exc)
        return EXIT_INVALID
    except (ActorSystemError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(step_table(result), end="")
    return {"succeeded": EXIT_OK, "needs_attention": EXIT_UNFINISHED}.get(
        result.status, EXIT_FAILED
    )


def _inputs(assignments: Sequence[str]) -> dict[str, str] | None:
    """``--input NAME=VALUE`` options as a mapping; None after printing why not."""
    inputs = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            print(f"error: --input {assignment!r}: expected NAME=VALUE", file=sys.stderr)
            return None
        inputs[key] = value
    return inputs


def step_table(result: WorkflowResult) -> str:
    """The run's steps as a table, then its status line."""
    rows = []
    for name, step in result.steps.items():
        status = f"{step.status} (journal)" if name in result.resumed else step.status
        detail = step.error if step.error is not None else _short(step.value)
        rows.append([name, status, str(step.attempts), step.agent or "-", detail])
    lines = table(["STEP", "STATUS", "ATTEMPTS", "AGENT", "RESULT"], rows)
    lines.append(f"{result.workflow} {result.run_id}: {result.status}")
    return "\n".join(lines) + "\n"


def _short(value: object, most: int = 60) -> str:
    text = "-" if value is None else repr(value)
    return text if len(text) <= most else f"{text[: most - 4]} ..."


def _max_time(text: str) -> float:
    """``--max-time``'s value in seconds: a positive duration such as 90s or 5m."""
    try:
        seconds = float(to_seconds(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than zero, got {text!r}")
    return seconds


def _load(path: str) -> Topology | None:
    """The topology at ``path``, or None after printing its errors to stderr."""
    try:
        return load_topology(path)
    except TopologyError as exc:
        _print_errors(exc)
        return None


def _print_errors(error: TopologyError) -> None:
    for line in error.errors:
        print(line, file=sys.stderr)


def _validate(path: str, *, env_checks: bool = True) -> int:
    topology = _load(path)
    if topology is None:
        return EXIT_INVALID
    problems = environment_problems(topology, path) if env_checks else []
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    actors = sum(1 for _ in iter_children(topology.supervisor))
    resources = f", {len(topology.resources)} resource(s)" if topology.resources else ""
    print(f"{path}: valid: system {topology.system!r}, {actors} actor(s){resources}")
    return EXIT_OK


async def _start(
    path: str,
    until_idle: bool,
    metrics_listen: str | None = None,
    progress_interval: float = 1.0,
    *,
    env_checks: bool = True,
    max_time: float | None = None,
    node: str | None = None,
) -> int:
    topology = _load(path)
    if topology is None:
        return EXIT_INVALID
    if env_checks:
        for line in environment_problems(topology, path):
            print(f"warning: {line}", file=sys.stderr, flush=True)
    if metrics_listen is not None:
        try:
            parse_listen(metrics_listen)
        except ValueError as exc:
            print(f"error: --metrics-listen: {exc}", file=sys.stderr)
            return EXIT_INVALID
        metrics = attrs.evolve(topology.metrics, listen=metrics_listen)
        topology = attrs.evolve(topology, metrics=metrics)
    started = trio.current_time()
    run = trio.CancelScope()  # the first signal ends the run: a graceful stop
    hard = trio.CancelScope()  # a second one cancels what is still stopping
    holder: list[ActorSystem] = []
    ends: list[EndSnapshot] = []  # the system as the run ended, before it stopped
    code = EXIT_OK
    ended: RunEnd | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, run, hard, holder, path)
            try:
                with hard:
                    ended = await _run(
                        topology,
                        path,
                        until_idle,
                        run,
                        holder,
                        progress_interval=progress_interval,
                        ends=ends,
                        max_time=max_time,
                        node=node,
                    )
                if hard.cancelled_caught:
                    print("error: stop interrupted by a second signal", file=sys.stderr)
                    code = EXIT_FAILED
            except TopologyError as exc:
                _print_errors(exc)
                code = EXIT_INVALID
            except (ActorSystemError, OSError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                code = EXIT_FAILED
            nursery.cancel_scope.cancel()
    if holder:
        verdict: list[str] = []
        if code == EXIT_OK:
            code, verdict = judge(ended, holder[0].progress())
        out = sys.stdout if code == 0 else sys.stderr
        _summary(holder[0], trio.current_time() - started, out, ends[-1] if ends else None)
        for line in verdict:
            print(line, file=out)
    return code


async def _run(
    topology: Topology,
    path: str,
    until_idle: bool,
    run: trio.CancelScope,
    holder: list[ActorSystem],
    *,
    progress_interval: float = 1.0,
    ends: list[EndSnapshot] | None = None,
    max_time: float | None = None,
    node: str | None = None,
) -> RunEnd | None:
    """Run the system until a signal (returns None), until it is idle with
    ``until_idle``, or for ``max_time`` seconds at most; then stop it gracefully.
    ``ends`` receives the system's snapshot as the run ended, before the stop.

    A signal or the time limit that comes while the tree is starting stops
    it once it has started.
    """
    deadline = math.inf if max_time is None else trio.current_time() + max_time
    ended: RunEnd | None = None
    async with open_system(topology, node=node) as system, trio.open_nursery() as display:
        holder.append(system)
        if ends is not None:
            display.start_soon(_remember_end, system, ends)
        print(
            f"started {topology.system!r} from {path}; checkpoint store: {system.store_url}",
            flush=True,
        )
        if system.endpoint_url is not None:
            print(
                f"metrics: {system.endpoint_url}/metrics, {system.endpoint_url}/healthz, "
                f"{system.endpoint_url}/readyz, {system.endpoint_url}/status",
                flush=True,
            )
            print(f"console: {system.endpoint_url}/ui", flush=True)
        if progress_interval > 0:
            display.start_soon(_show_progress, system, progress_interval)
        with run:
            with trio.move_on_at(deadline) as timer:
                if until_idle:
                    await system.wait_until_idle()
                    # Before the stop: retiring an actor closes its circuit.
                    ended = RunEnd(
                        "idle",
                        circuits=_open_circuits(system),
                        attention=system.workflow_runs.parked_runs(),
                    )
                else:
                    await trio.sleep_forever()
            if timer.cancelled_caught:
                assert max_time is not None
                print(
                    f"--max-time {_seconds(max_time)} passed: stopping gracefully",
                    file=sys.stderr,
                    flush=True,
                )
                ended = RunEnd("time", limit=max_time)
        display.cancel_scope.cancel()
    return ended


async def _watch_signals(
    signals: AsyncIterator[int],
    run: trio.CancelScope,
    hard: trio.CancelScope,
    holder: list[ActorSystem],
    path: str,
) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            _reload(holder, path)
        elif not run.cancel_called:
            print(f"received {name}: stopping gracefully", file=sys.stderr, flush=True)
            run.cancel()
        else:
            print(f"received {name} again: cancelling", file=sys.stderr, flush=True)
            hard.cancel()


def _open_circuits(system: ActorSystem) -> tuple[str, ...]:
    """The actors and resources whose circuit is open or half-open, as ``path (state)``."""
    return tuple(
        f"{stats.path} ({stats.breaker.replace('_', '-')})"
        for stats in (cell.statistics() for cell in system.cells())
        if stats.breaker in ("open", "half_open")
    )


def judge(ended: RunEnd | None, progress: Progress) -> tuple[int, list[str]]:
    """The exit code of a run that stopped gracefully, and the lines that say why
    it is not 0: a signal (None) or an idle system with every counted item done,
    no circuit open and no workflow run needing attention is 0; idle with work
    left undone is 3; time up is 4."""
    if ended is None:
        return EXIT_OK, []
    left = progress.total - progress.done
    counted = f"{progress.done}/{progress.total} item(s) done"
    if left > 0:
        counted += f": {left} item(s) were never finished"
    if ended.reason == "time":
        line = f"time ran out after {_seconds(ended.limit)} (--max-time)"
        if progress.total or progress.done:
            line += f" with {counted}"
        return EXIT_TIME_UP, [line]
    lines = []
    if left > 0:
        lines.append(f"idle with {counted}")
    if ended.circuits:
        lines.append(
            f"idle with {len(ended.circuits)} circuit(s) open: {', '.join(ended.circuits)}; "
            "they refuse messages until a half-open trial succeeds"
        )
    if ended.attention:
        lines.append(
            f"idle with {len(ended.attention)} workflow run(s) needing attention: "
            f"{', '.join(ended.attention)}; run each again with its run id once fixed"
        )
    return (EXIT_UNFINISHED if lines else EXIT_OK), lines


def _seconds(seconds: float) -> str:
    """``90s``, ``5m``, ``2h``, ``1.5s``: a duration as a user would write it."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def progress_line(progress: Progress, most: int = 6) -> str:
    """``progress: 12/50 item(s) done, 1 retried; working: a, b (4)``."""
    parts = []
    if progress.total or progress.done:
        parts.append(f"{progress.done}/{progress.total} item(s) done")
    if progress.retried:
        parts.append(f"{progress.retried} retried")
    line = "progress: " + (", ".join(parts) or "no items counted")
    working = [f"{path} ({count})" if count > 1 else path for path, count in progress.working]
    if working:
        more = f" and {len(working) - most} more" if len(working) > most else ""
        line += "; working: " + ", ".join(working[:most]) + more
    elif not progress.runs:
        line += "; idle"
    if progress.runs:
        runs = [f"{run} ({ended}/{steps} steps)" for run, ended, steps in progress.runs]
        more = f" and {len(runs) - most} more" if len(runs) > most else ""
        line += "; runs: " + ", ".join(runs[:most]) + more
    return line


async def _show_progress(system: ActorSystem, interval: float) -> None:
    """Print a progress line every ``interval`` seconds when it changed."""
    last = ""
    while True:
        await trio.sleep(interval)
        progress = system.progress()
        if not (progress.total or progress.done or progress.working or progress.runs) and not last:
            continue  # nothing counted and nobody working yet: nothing to say
        line = progress_line(progress)
        if line != last:
            print(line, flush=True)
            last = line


@attrs.frozen
class EndSnapshot:
    """The system as the run ended, before stopping it closed every circuit.

    Attributes:
        problems: its health problems then.
        circuits: each resource's actor breaker then, by name.
    """

    problems: tuple[Problem, ...]
    circuits: dict[str, str | None]

    @classmethod
    def of(cls, system: ActorSystem) -> EndSnapshot:
        """The snapshot of ``system`` now."""
        circuits = {name: s.circuit for name, s in system.resource_statistics().items()}
        return cls(health_of(system).problems, circuits)


async def _remember_end(system: ActorSystem, into: list[EndSnapshot]) -> None:
    """When the run ends (cancelled, before the system stops), append its
    snapshot to ``into``, for the summary."""
    try:
        await trio.sleep_forever()
    finally:
        into.append(EndSnapshot.of(system))


def _reload(holder: list[ActorSystem], path: str) -> None:
    """SIGHUP: apply the topology file's changes that can be applied live."""
    if not holder:
        print("received SIGHUP before the system started: ignored", file=sys.stderr, flush=True)
        return
    try:
        changes = holder[0].reload(load_topology(path))
    except TopologyError as exc:
        print(f"received SIGHUP: {path} is invalid; nothing changed:", file=sys.stderr)
        _print_errors(exc)
        return
    except Exception as exc:  # a reload must never end the run
        print(f"received SIGHUP: cannot reload {path}: {exc!r}", file=sys.stderr)
        return
    print(f"received SIGHUP: reloaded {path}", file=sys.stderr)
    for change in changes or ["no changes"]:
        print(f"  {change}", file=sys.stderr, flush=True)


def _summary(
    system: ActorSystem | None,
    elapsed: float,
    file: TextIO | None = None,
    end: EndSnapshot | None = None,
) -> None:
    """The summary lines; ``end``: the system as the run ended (by default
    as it is now: its circuits closed, the resources that never came up)."""
    if system is None:
        return
    out = file if file is not None else sys.stdout
    nodes = list(_flatten(system.tree()))
    actors = [n for n in nodes if n.kind == "actor"]
    handled = sum(cell.handled for cell in system.cells())
    resources = system.resource_tree()
    every = nodes + (_flatten(resources) if resources is not None else [])
    restarts = sum(n.stats.restarts for n in every)
    print(
        f"summary: {len(actors)} actor(s), {handled} message(s) handled, "
        f"{restarts} restart(s), {system.dead_letter_count} dead letter(s), "
        f"{elapsed:.2f}s elapsed",
        file=out,
    )
    progress = system.progress()
    if progress.total or progress.done or progress.retried:
        print(
            f"items: {progress.done}/{progress.total} done, {progress.retried} retried",
            file=out,
        )
    outcomes: dict[str, int] = {}
    for (_, status), count in system.workflow_statistics().outcomes.items():
        outcomes[status] = outcomes.get(status, 0) + count
    if outcomes:
        ended = ", ".join(f"{count} {status}" for status, count in sorted(outcomes.items()))
        print(f"workflow runs: {ended}", file=out)
    for name, stats in system.resource_statistics().items():
        limiter = stats.limiter
        print(
            f"resource {name}: {stats.requests} request(s), {stats.failures} failed, "
            f"{limiter.retries} retried, {limiter.rejected} refused by the breaker "
            f"(now {_breaker_now(stats, end)}), {limiter.wait_seconds:.2f}s waited for admission",
            file=out,
        )
    for usage in system.usage_statistics():
        cost = (
            f", ${usage.dollars:,.4f}"
            if usage.requests > usage.unpriced_requests
            else ", no pricing"
        )
        print(
            f"usage {usage.resource} by {usage.agent}: {usage.requests} request(s), "
            f"{usage.input_tokens:,} input + {usage.output_tokens:,} output tokens{cost}",
            file=out,
        )
    for scope, budget in system.budget_statistics().items():
        state = f" (exhausted: {budget.on_exhausted})" if budget.exhausted else ""
        print(
            f"budget {scope}: {', '.join(_budget_parts(budget))} spent{state}, "
            f"{budget.refusals} refused, {budget.waits} waited; "
            f"resets at {budget.resets_at:%Y-%m-%d %H:%M:%S} UTC",
            file=out,
        )
    if end is None:
        problems = [p for p in health_of(system).problems if p.condition == "never_came_up"]
    else:
        problems = list(end.problems)
    for problem in problems:
        print(problem.line, file=out)


def _budget_parts(budget: BudgetStatistics) -> list[str]:
    parts = []
    if budget.tokens_limit is not None:
        parts.append(f"{budget.tokens_spent:,} of {budget.tokens_limit:,} tokens")
    if budget.dollars_limit is not None:
        parts.append(f"${budget.dollars_spent:,.2f} of ${budget.dollars_limit:,.2f}")
    return parts


def _breaker_now(stats: ResourceStatistics, end: EndSnapshot | None) -> str:
    circuit = end.circuits.get(stats.name, stats.circuit) if end is not None else stats.circuit
    if circuit not in (None, "closed"):
        return f"{circuit} after crashes"
    return stats.limiter.breaker or "none"


def _flatten(node: TreeNode) -> list[TreeNode]:
    out = [node]
    for child in node.children:
        out.extend(_flatten(child))
    return out
