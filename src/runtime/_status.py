"""``python -m runtime status URL``: a running system's tree, as a table."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import httpx

__all__ = ["format_status", "show_status", "status_url"]


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
    row = [
        "  " * depth + node["path"],
        node["kind"],
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


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
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
    """The problems, one line each, and the other nodes' last failures."""
    problems = (document.get("health") or {}).get("problems") or []
    lines = []
    if problems:
        lines += ["", "problems:"] + [f"  {problem['message']}" for problem in problems]
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
    lines += _table(header, rows)
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
        lines += _table(
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
    lines += _cluster_lines(document.get("cluster"))
    lines += _health_lines(document)
    return "\n".join(lines) + "\n"


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
    rows = [
        [p["unit"], p["node"] or "-", str(p["epoch"]) if p["epoch"] is not None else "-"]
        for p in cluster["placement"]
    ]
    return lines + _table(["UNIT", "NODE", "EPOCH"], rows)


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
