"""Running ``python -m runtime`` as a subprocess, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import runtime

REPO = Path(__file__).resolve().parent.parent
SOURCE = str(Path(runtime.__file__).resolve().parent.parent)  # the runtime under test
SUBPROCESS_TIMEOUT = 60.0


def run_cli(
    *args: str,
    cwd: Path | str = REPO,
    env: Mapping[str, str] | None = None,
    unset: Iterable[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m runtime ARGS`` (from the repository root by default),
    with ``env`` added to this process's environment and ``unset`` removed;
    the runtime under test comes first on ``PYTHONPATH``."""
    environment = {**os.environ, **(env or {})}
    for name in unset:
        environment.pop(name, None)
    environment["PYTHONPATH"] = os.pathsep.join([SOURCE, environment.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
