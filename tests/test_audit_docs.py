"""docs/audit.md documents every rule, and its examples are true: each rule's
**Bad** block triggers that rule, and its **Good** block triggers nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runtime._audit import RULES, audit
from tests.clikit import REPO

AUDIT_DOC = REPO / "docs" / "audit.md"
_SECTION = re.compile(r"^### (RT\d{3}) ([a-z-]+)\n(.*?)(?=^### |^## )", re.M | re.S)
_EXAMPLE = re.compile(r"\*\*(Bad|Good)\*\*:\n\n```(python|yaml)\n(.*?)^```", re.M | re.S)


def _sections() -> dict[str, tuple[str, str]]:
    """Each rule's section: its name and its text."""
    text = AUDIT_DOC.read_text(encoding="utf-8")
    return {rule: (name, body) for rule, name, body in _SECTION.findall(text)}


def test_every_rule_has_its_section() -> None:
    """One ``### RT101 unbounded-gather`` heading per rule, in id order,
    each with What, Why and Fix."""
    sections = _sections()
    assert list(sections) == sorted(RULES)
    for rule, (name, body) in sections.items():
        assert name == RULES[rule].name
        for part in ("**What**", "**Why**", "**Fix**"):
            assert part in body, f"docs/audit.md: {rule} has no {part}"


@pytest.mark.parametrize("rule", sorted(set(RULES) - {"RT001"}))
def test_bad_triggers_the_rule_and_good_nothing(rule: str, tmp_path: Path) -> None:
    """The section's Bad example is reported under its rule alone; the Good
    one passes."""
    examples = _EXAMPLE.findall(_sections()[rule][1])
    assert [kind for kind, _, _ in examples] == ["Bad", "Good"]
    for kind, language, code in examples:
        path = tmp_path / f"{kind.lower()}.{'py' if language == 'python' else 'yaml'}"
        path.write_text(code, encoding="utf-8")
        found = [finding.rule for finding in audit([str(path)], use_ruff=False).findings]
        assert found == ([rule] if kind == "Bad" else []), f"{rule} {kind}: {found}"
