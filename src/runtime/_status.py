"""``python -m runtime status URL``: a running system's tree, as a table."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import httpx

__all__ = ["format_status", "show_status", "status_url", "table"]


def status_url(url: str) -> str:
    """The ``/status`` address for ``url``: a port, ``host:port``, or a URL
    with or without ``/status``."""
    text = url.strip()
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    if "://" not in text:
        text = f"http://{text}"
    text = text.rstrip("/")
    return text if text.endswith("/status") else f"{text}/status"


def _rows(node: dict[str, Any], depth: int = 0) -> list[list[str]]:
    capacity = node["mailbox_capacity"]
    mailbox = f"{node['mailbox_depth']}/{capacity}" if capacity else "-"
    pool = node.get("pool")
    kind = node["kind"]
    if pool:  # a pool's supervisor: its routing and available workers
        kind = f"pool ({pool['routing']} {pool['available']}/{pool['size']})"
    row = [
        "  " * depth + node["path"],
        kind,
        node["status"],
        str(node["incarnation"]),
        str(node["restarts"]),
        mailbox,
        node["breaker"] or "-",
        str(node["pending_asks"]),
    ]
    rows = [row]
    for child in node["children"]:
        rows.extend(_rows(child, depth + 1))
    return rows


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _failures(node: dict[str, Any], shown: set[str]) -> list[str]:
    """``  root/worker (running, 2 restart(s)): ValueError('boom')`` for each
    node below ``node`` with a last failure, unless its path is in ``shown``."""
    lines = []
    failure = node.get("last_failure")
    if failure is not None and node["path"] not in shown:
        lines.append(
            f"  {node['path']} ({node['status']}, {node['restarts']} restart(s)): {failure}"
        )
    for child in node["children"]:
        lines.extend(_failures(child, shown))
    return lines


def _health_lines(document: dict[str, Any]) -> list[str]:
    """The problems and warnings, one line each, and the other nodes' last failures."""
    health = document.get("health") or {}
    problems = health.get("problems") or []
    warnings = health.get("warnings") or []
    lines = []
    if problems:
        lines += ["", "problems:"] + [f"  {problem['message']}" for problem in problems]
    if warnings:
        lines += ["", "warnings:"] + [f"  {warning['message']}" for warning in warnings]
    # A failing node's reason is on its problem line already.
    shown = {
        problem["name"] if problem["kind"] == "actor" else f"resources/{problem['name']}"
        for problem in problems
    }
    failures = _failures(document["tree"], shown)
    if document.get("resources"):
        failures += _failures(document["resources"], shown)
    if failures:
        lines += ["", "last failures:", *failures]
    return lines


def format_status(document: dict[str, Any]) -> str:
    """The ``/status`` document as text: a header line, the tree, the
    resources, then what is wrong and each node's last failure."""
    health = document.get("health") or {}
    degraded = ", degraded" if health.get("status") == "degraded" else ""
    lines = [
        f"system {document['system']!r}: {document['state']}{degraded} "
        f"({document['dead_letters']} dead letter(s))",
        "",
    ]
    rows = _rows(document["tree"])
    if document.get("resources"):
        rows += _rows(document["resources"])
    header = ["PATH", "KIND", "STATUS", "INCARNATION", "RESTARTS", "MAILBOX", "BREAKER", "ASKS"]
    lines += table(header, rows)
    limiters = document.get("limiters") or {}
    if limiters:
        resource_rows = []
        for name, limiter in limiters.items():
            limit = limiter["max_concurrency"]
            waiting = limiter["waiting"]
            resource_rows.append(
                [
                    name,
                    f"{limiter['tokens_in_use']}/{limit if limit is not None else '-'}",
                    f"{waiting['high']}/{waiting['normal']}/{waiting['low']}",
                    limiter["breaker"] or "-",
                    f"{limiter['paused_for']:.1f}s",
                    str(limiter["requests"]),
                    str(limiter["failures"]),
                ]
            )
        lines.append("")
        lines += table(
            [
                "RESOURCE",
                "IN USE",
                "WAITING H/N/L",
                "BREAKER",
                "PAUSED",
                "REQUESTS",
                "FAILED",
            ],
            resource_rows,
        )
    lines += _run_lines(document.get("workflows") or {})
    lines += _spending_lines(document)
    lines += _cluster_lines(document.get("cluster"))
    lines += _health_lines(document)
    return "\n".join(lines) + "\n"


def _run_lines(workflows: dict[str, Any]) -> list[str]:
    """The workflow runs in flight and the last ones, a row each with its steps."""
    runs = [*workflows.get("running", []), *reversed(workflows.get("recent", []))]
    if not runs:
        return []
    rows = [
        [
            f"{run['workflow']}/{run['run_id']}",
            run["status"],
            ", ".join(f"{step} {status}" for step, status in run["steps"].items()),
        ]
        for run in runs
    ]
    return ["", *table(["RUN", "STATUS", "STEPS"], rows)]


def _limit(spent: float, limit: float | None, dollars: bool) -> str:
    if limit is None:
        return "-"
    if dollars:
        return f"${spent:,.2f}/${limit:,.2f}"
    return f"{int(spent):,}/{int(limit):,}"


def _spending_lines(document: dict[str, Any]) -> list[str]:
    """The tokens and cost of each agent on each resource, then the budgets."""
    lines: list[str] = []
    usage = document.get("usage") or []
    if usage:
        rows = [
            [
                entry["resource"],
                entry["agent"],
                str(entry["requests"]),
                f"{entry['input_tokens']:,}",
                f"{entry['output_tokens']:,}",
                f"${entry['dollars']:,.4f}"
                if entry["requests"] > entry["unpriced_requests"]
                else "-",
            ]
            for entry in usage
        ]
        header = ["RESOURCE", "AGENT", "REQUESTS", "INPUT TOKENS", "OUTPUT TOKENS", "COST"]
        lines += ["", *table(header, rows)]
    budgets = document.get("budgets") or {}
    if budgets:
        rows = [
            [
                scope,
                _limit(budget["tokens_spent"], budget["tokens_limit"], dollars=False),
                _limit(budget["dollars_spent"], budget["dollars_limit"], dollars=True),
                budget["on_exhausted"],
                budget["resets_at"],
                str(budget["refusals"]),
                str(budget["waits"]),
            ]
            for scope, budget in budgets.items()
        ]
        header = ["BUDGET", "TOKENS", "DOLLARS", "ON EXHAUSTED", "RESETS AT", "REFUSED", "WAITED"]
        lines += ["", *table(header, rows)]
    return lines


def _cluster_lines(cluster: dict[str, Any] | None) -> list[str]:
    """The nodes, and where each unit runs under which lease epoch."""
    if not cluster:
        return []
    mean = cluster.get("remote_ask_seconds")
    lines = [
        "",
        f"node {cluster['node']!r} of {len(cluster['nodes'])} live: "
        f"{', '.join(cluster['nodes'])}; failovers {cluster['failovers']}, "
        f"handovers {cluster['handovers']}, lost {cluster['lost']}"
        + (f"; remote ask mean {mean * 1000:.2f}ms" if mean is not None else ""),
        "",
    ]
    durable, topics = cluster.get("durable"), cluster.get("topics")
    if durable and any(durable.values()):
        lines[-1:-1] = [
            f"durable tells: {durable['published']} published, {durable['applied']} applied, "
            f"{durable['duplicates']} duplicates, {durable['dead_letters']} dead letters"
        ]
    if topics and any(topics.values()):
        lines[-1:-1] = [
            f"topic events: {topics['sent']} sent, {topics['received']} received, "
            f"{topics['dropped']} dropped"
        ]
    rows = [
        [p["unit"], p["node"] or "-", str(p["epoch"]) if p["epoch"] is not None else "-"]
        for p in cluster["placement"]
    ]
    return lines + table(["UNIT", "NODE", "EPOCH"], rows)


def show_status(url: str, out: TextIO | None = None) -> int:
    """Print the status at ``url``; 0 if the system runs, else 1."""
    out = out if out is not None else sys.stdout
    address = status_url(url)
    try:
        response = httpx.get(address, timeout=10)
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"error: cannot read {address}: {exc}", file=sys.stderr)
        return 1
    out.write(format_status(document))
    return 0 if document.get("state") == "running" else 1
