"""Every ``system.X`` the docs, the README and the examples use exists on
``ActorSystem``: a restructure cannot drop a documented name unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

import runtime

ROOT = Path(__file__).resolve().parent.parent
INSTANCE_ATTRIBUTES = {"endpoint_url", "topology", "name", "store", "root", "resources"}
NOT_API = {"publish"}  # the guide says there is no system.publish


def test_documented_system_names_exist() -> None:
    """Names read as ``system.<name>`` in docs/, README.md and actors/."""
    texts = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("actors/*.py")]
    names = set()
    for path in texts:
        names |= set(re.findall(r"\bsystem\.([a-z_]+)", path.read_text()))
    missing = sorted(
        name
        for name in names - INSTANCE_ATTRIBUTES - NOT_API
        if not hasattr(runtime.ActorSystem, name)
    )
    assert missing == []
