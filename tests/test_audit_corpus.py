"""The audit's precision and recall on a labelled corpus of real patterns.

Each file under ``tests/audit_corpus/`` starts with ``# expect: RT101`` (the
rules it must trigger, one or more) or ``# expect: none``; ``positive/``
holds the anti-patterns, ``negative/`` the near misses that must pass (a
gather over three fixed calls, fan-out under a semaphore, a bounded queue,
a client used with ``async with``, a task kept in a set). ruff is left out:
the corpus measures the audit's own rules.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from runtime._audit import RULES, audit

CORPUS = Path(__file__).parent / "audit_corpus"
_EXPECT = re.compile(r"^# expect: (.+)$")


@attrs.frozen
class Case:
    path: Path
    expected: frozenset[str]


def _cases(kind: str) -> list[Case]:
    cases = []
    for path in sorted((CORPUS / kind).iterdir()):
        found = _EXPECT.match(path.read_text(encoding="utf-8").splitlines()[0])
        assert found is not None, f"{path}: the first line must be '# expect: ...'"
        labels = frozenset(found.group(1).split()) - {"none"}
        cases.append(Case(path, labels))
    return cases


@attrs.define
class Score:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    misses: list[str] = attrs.field(factory=list)

    def add(self, case: Case, found: set[str]) -> None:
        self.true_positives += len(case.expected & found)
        for rule in sorted(case.expected - found):
            self.false_negatives += 1
            self.misses.append(f"{case.path.name}: {rule} not found")
        for rule in sorted(found - case.expected):
            self.false_positives += 1
            self.misses.append(f"{case.path.name}: {rule} found, not expected")

    @property
    def precision(self) -> float:
        return self.true_positives / (self.true_positives + self.false_positives)

    @property
    def recall(self) -> float:
        return self.true_positives / (self.true_positives + self.false_negatives)


def test_the_corpus_is_labelled() -> None:
    """At least 80 positive and 80 negative snippets; every positive names
    known rules, every negative none."""
    positives, negatives = _cases("positive"), _cases("negative")
    assert len(positives) >= 80
    assert len(negatives) >= 80
    for case in positives:
        assert case.expected, f"{case.path.name}: a positive names its rule"
        assert case.expected <= set(RULES), f"{case.path.name}: unknown rule"
    assert all(not case.expected for case in negatives)
    assert {rule for case in positives for rule in case.expected} == set(RULES) - {"RT001"}


def test_precision_and_recall_on_the_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    """Each at least 0.9; the figures and every miss are printed."""
    score = Score()
    for case in [*_cases("positive"), *_cases("negative")]:
        result = audit([str(case.path)], use_ruff=False)
        score.add(case, {finding.rule for finding in result.findings})
    with capsys.disabled():
        print(
            f"\naudit corpus: precision {score.precision:.3f}, recall {score.recall:.3f} "
            f"({score.true_positives} true positives, {score.false_positives} false "
            f"positives, {score.false_negatives} false negatives)"
        )
        for miss in score.misses:
            print(f"  {miss}")
    assert score.precision >= 0.9
    assert score.recall >= 0.9
