"""The audit's reports: text for a terminal, JSON for scripts, SARIF 2.1.0
for code-scanning services, and a Markdown report for people."""

from __future__ import annotations

import json
import posixpath
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any

from .baseline import Comparison
from .rules import RULES, Finding, fingerprint
from .scan import AuditResult

__all__ = ["FORMATS", "SARIF_SCHEMA", "render"]

SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
_TOOL = "runtime audit"
_WORST = 10
_LISTED = 50


def render(fmt: str, result: AuditResult, comparison: Comparison, *, baselined: bool) -> str:
    """The report of ``result`` in ``fmt`` (one of ``FORMATS``); with
    ``baselined``, ``comparison`` says which findings are new."""
    return FORMATS[fmt](result, comparison, baselined)


def _summary(result: AuditResult, comparison: Comparison, baselined: bool) -> str:
    total = len(result.findings)
    new = sum(comparison.new)
    scope = f"in {result.files:,} file(s), {result.lines:,} line(s) of Python"
    ruff = f"ruff ASYNC rules: {result.ruff}"
    if baselined:
        return (
            f"{new} new finding(s) ({total} in all, {total - new} in the baseline) {scope}; {ruff}."
        )
    if total == 0:
        return f"No findings {scope}; {ruff}."
    return f"{total} finding(s) {scope}; {ruff}."


def _text(result: AuditResult, comparison: Comparison, baselined: bool) -> str:
    out = []
    for finding, new in zip(result.findings, comparison.new, strict=True):
        if not new:
            continue
        out.append(f"{finding.path}:{finding.line}:{finding.col}: {finding.rule} {finding.message}")
        out.append(f"    fix: {finding.fix}")
    out.append(_summary(result, comparison, baselined))
    return "\n".join(out) + "\n"


def _json(result: AuditResult, comparison: Comparison, baselined: bool) -> str:
    findings = [
        {
            "path": finding.path,
            "line": finding.line,
            "col": finding.col,
            "rule": finding.rule,
            "message": finding.message,
            "fix": finding.fix,
            "tool": finding.tool,
            "fingerprint": fingerprint(finding),
            "new": new,
        }
        for finding, new in zip(result.findings, comparison.new, strict=True)
    ]
    report = {
        "tool": _TOOL,
        "files": result.files,
        "lines": result.lines,
        "seconds": round(result.seconds, 3),
        "ruff": result.ruff,
        "baseline": baselined,
        "counts": dict(sorted(Counter(finding.rule for finding in result.findings).items())),
        "new": sum(comparison.new),
        "findings": findings,
    }
    return json.dumps(report, indent=2) + "\n"


def _uri(path: str) -> str:
    if PurePosixPath(path).is_absolute():
        return "file://" + urllib.parse.quote(path)
    return urllib.parse.quote(path)


def _sarif_rule(rule_id: str, finding: Finding) -> dict[str, Any]:
    rule = RULES.get(rule_id)
    if rule is None:  # one of ruff's
        entry: dict[str, Any] = {
            "id": rule_id,
            "shortDescription": {"text": finding.message},
            "help": {"text": finding.fix},
        }
        if finding.fix.startswith("see http"):
            entry["helpUri"] = finding.fix.removeprefix("see ")
        return entry
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "help": {"text": rule.fix},
        "defaultConfiguration": {"level": "error" if rule.id == "RT001" else "warning"},
    }


def _sarif(result: AuditResult, comparison: Comparison, baselined: bool) -> str:
    rule_ids = sorted({finding.rule for finding in result.findings})
    first = {finding.rule: finding for finding in reversed(result.findings)}
    rules = [_sarif_rule(rule_id, first[rule_id]) for rule_id in rule_ids]
    index = {rule_id: position for position, rule_id in enumerate(rule_ids)}
    results = []
    for finding, new in zip(result.findings, comparison.new, strict=True):
        entry: dict[str, Any] = {
            "ruleId": finding.rule,
            "ruleIndex": index[finding.rule],
            "level": "error" if finding.rule == "RT001" else "warning",
            "message": {"text": f"{finding.message}. Fix: {finding.fix}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _uri(finding.path)},
                        "region": {"startLine": finding.line, "startColumn": finding.col},
                    }
                }
            ],
            "partialFingerprints": {"runtimeAudit/v1": fingerprint(finding)},
        }
        if baselined:
            entry["baselineState"] = "new" if new else "unchanged"
        results.append(entry)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": _TOOL, "rules": rules}},
                "results": results,
                "invocations": [{"executionSuccessful": True}],
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _markdown(result: AuditResult, comparison: Comparison, baselined: bool) -> str:
    findings = result.findings
    by_rule = Counter(finding.rule for finding in findings)
    new_by_rule = Counter(
        finding.rule for finding, new in zip(findings, comparison.new, strict=True) if new
    )
    out = ["# Concurrency audit", "", _summary(result, comparison, baselined), ""]
    if findings:
        out += ["## By rule", ""]
        out += _table(
            ["Rule", "Name", "Findings", "New"],
            [
                (f"`{rule}`", _rule_name(rule), count, new_by_rule[rule])
                for rule, count in sorted(by_rule.items())
            ],
        )
        directories = Counter(posixpath.dirname(finding.path) or "." for finding in findings)
        out += ["", "## By directory", ""]
        out += _table(
            ["Directory", "Findings"],
            [(f"`{name}`", count) for name, count in directories.most_common()],
        )
        files = Counter(finding.path for finding in findings)
        rules_of: dict[str, set[str]] = {}
        for finding in findings:
            rules_of.setdefault(finding.path, set()).add(finding.rule)
        out += ["", f"## The worst files (top {_WORST})", ""]
        out += _table(
            ["File", "Findings", "Rules"],
            [
                (f"`{name}`", count, ", ".join(sorted(rules_of[name])))
                for name, count in files.most_common(_WORST)
            ],
        )
    if baselined:
        out += ["", "## Trend against the baseline", ""]
        rules = sorted(set(by_rule) | set(comparison.baseline))
        out += _table(
            ["Rule", "Baseline", "Now", "New", "Fixed"],
            [
                (
                    f"`{rule}`",
                    comparison.baseline[rule],
                    by_rule[rule],
                    new_by_rule[rule],
                    comparison.fixed[rule],
                )
                for rule in rules
            ],
        )
        out += [
            "",
            f"{sum(comparison.baseline.values())} finding(s) in the baseline, "
            f"{len(findings)} now: {sum(comparison.new)} new, "
            f"{sum(comparison.fixed.values())} fixed.",
        ]
    listed = [f for f, new in zip(findings, comparison.new, strict=True) if new]
    if listed:
        title = "New findings" if baselined else "Findings"
        more = f" (the first {_LISTED} of {len(listed)})" if len(listed) > _LISTED else ""
        out += ["", f"## {title}{more}", ""]
        out += [
            f"- `{f.path}:{f.line}:{f.col}` **{f.rule}** {f.message}. Fix: {f.fix}"
            for f in listed[:_LISTED]
        ]
    return "\n".join(out) + "\n"


def _rule_name(rule_id: str) -> str:
    rule = RULES.get(rule_id)
    return rule.name if rule is not None else "ruff"


FORMATS: dict[str, Callable[[AuditResult, Comparison, bool], str]] = {
    "text": _text,
    "json": _json,
    "sarif": _sarif,
    "markdown": _markdown,
}
"""Each report format by its ``--format`` name."""
