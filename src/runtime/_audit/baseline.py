"""Baselines: the findings a project has accepted, so that CI fails only on
new ones.

A baseline names each finding by its fingerprint (file, rule and source
line, not the line number), so findings that move with edits above them
stay known. Matching counts: a baseline with two identical findings in a
file accepts two, and a third is new.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import attrs

from .rules import Finding, fingerprint

__all__ = [
    "BASELINE_VERSION",
    "Baseline",
    "BaselineError",
    "Comparison",
    "compare",
    "read_baseline",
    "write_baseline",
]

BASELINE_VERSION = 1


class BaselineError(ValueError):
    """A baseline file that cannot be read or is not a baseline."""


def write_baseline(path: str, findings: Sequence[Finding]) -> None:
    """Write ``findings`` as the baseline at ``path`` (sorted, one per line
    of JSON, so that its changes read well in a review)."""
    entries = sorted(
        (
            {
                "fingerprint": fingerprint(finding),
                "rule": finding.rule,
                "path": finding.path,
                "line": finding.line,
                "message": finding.message,
            }
            for finding in findings
        ),
        key=lambda entry: (entry["path"], entry["line"], entry["rule"]),
    )
    body = ",\n".join("    " + json.dumps(entry, sort_keys=True) for entry in entries)
    text = (
        f'{{\n  "tool": "runtime audit",\n  "version": {BASELINE_VERSION},\n'
        f'  "findings": [\n{body}\n  ]\n}}\n'
        if entries
        else f'{{"tool": "runtime audit", "version": {BASELINE_VERSION}, "findings": []}}\n'
    )
    Path(path).write_text(text, encoding="utf-8")


@attrs.frozen
class Baseline:
    """The findings a baseline accepts, each as (fingerprint, rule)."""

    entries: tuple[tuple[str, str], ...]


@attrs.frozen
class Comparison:
    """Findings against a baseline.

    Attributes:
        new: for each finding, whether the baseline does not accept it.
        baseline: the baseline's findings by rule (empty without one).
        fixed: by rule, the baseline's findings no longer found.
    """

    new: tuple[bool, ...]
    baseline: Counter[str]
    fixed: Counter[str]


def read_baseline(path: str) -> Baseline:
    """The baseline at ``path``.

    Raises:
        BaselineError: the file is missing, not JSON, or not a baseline.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"cannot read the baseline {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BaselineError(f"the baseline {path} is not JSON: {exc}") from None
    entries = data.get("findings") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("fingerprint"), str)
        and isinstance(entry.get("rule"), str)
        for entry in entries
    ):
        raise BaselineError(
            f"the baseline {path} is not one `runtime audit --write-baseline` wrote"
        )
    return Baseline(tuple((entry["fingerprint"], entry["rule"]) for entry in entries))


def compare(findings: Sequence[Finding], baseline: Baseline | None) -> Comparison:
    """Which findings are new against ``baseline`` (all of them without
    one), and which of the baseline's are gone."""
    if baseline is None:
        return Comparison((True,) * len(findings), Counter(), Counter())
    left = Counter(key for key, _ in baseline.entries)
    rules = dict(baseline.entries)
    flags = []
    for finding in findings:
        key = fingerprint(finding)
        if left[key] > 0:
            left[key] -= 1
            flags.append(False)
        else:
            flags.append(True)
    fixed: Counter[str] = Counter()
    for key, count in left.items():
        if count > 0:
            fixed[rules[key]] += count
    return Comparison(tuple(flags), Counter(rule for _, rule in baseline.entries), fixed)
