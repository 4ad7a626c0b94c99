"""``python -m runtime audit``: its reports, baselines, ignore comments, exit
codes, the files it walks, topology rules and ruff's merged findings."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest

from runtime._audit import audit
from runtime._audit.ruff import find_ruff
from runtime._audit.rules import Finding, fingerprint
from runtime._cli import main
from tests.clikit import run_cli

SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"

FANOUT = """\
import asyncio


async def fetch(url):
    return url


async def fetch_all(urls):
    return await asyncio.gather(*(fetch(url) for url in urls))
"""

CLEAN = """\
import asyncio


async def main():
    queue = asyncio.Queue(maxsize=10)
    await queue.put(1)
"""

BLOCKING = """\
import time


async def nap():
    time.sleep(1)
"""


def _write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(["audit", *argv])``: the exit code, stdout and stderr."""
    code = main(["audit", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory, the working directory of the test."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_text_names_file_line_column_rule_and_fix(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line per finding, ``file:line:col: RT101 message``, its fix below,
    then a summary; exit 1."""
    _write(project, "app.py", FANOUT)
    code, out, err = _run(capsys, "app.py", "--no-ruff")
    lines = out.splitlines()
    assert code == 1
    assert lines[0] == (
        "app.py:9:18: RT101 asyncio.gather() over a comprehension of `urls`: one coroutine "
        "per item, all at once, with no semaphore, limiter or runtime resource in reach"
    )
    assert lines[1].startswith("    fix: bound the concurrency: acquire an asyncio.Semaphore(n)")
    assert lines[2] == "1 finding(s) in 1 file(s), 9 line(s) of Python; ruff ASYNC rules: off."
    assert err == ""


def test_exit_codes(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """0 with nothing found, 1 with findings, 2 for a path or a baseline that
    cannot be read, and for an unknown format."""
    _write(project, "clean.py", CLEAN)
    _write(project, "bad.py", FANOUT)
    assert _run(capsys, "clean.py", "--no-ruff")[0] == 0
    assert _run(capsys, "clean.py", "bad.py", "--no-ruff")[0] == 1
    code, out, err = _run(capsys, "missing.py", "--no-ruff")
    assert (code, out) == (2, "")
    assert err == "error: audit: no such file or directory: missing.py\n"
    (project / "broken.json").write_text("{", encoding="utf-8")
    code, _, err = _run(capsys, "bad.py", "--baseline", "broken.json", "--no-ruff")
    assert code == 2
    assert err.startswith("error: audit: the baseline broken.json is not JSON")
    (project / "other.json").write_text('{"findings": [1]}', encoding="utf-8")
    assert _run(capsys, "bad.py", "--baseline", "other.json", "--no-ruff")[0] == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "bad.py", "--format", "xml"])
    assert exit_info.value.code == 2


def test_json_report(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every finding with its position, rule, fix and fingerprint, and counts."""
    _write(project, "app.py", FANOUT + "\nq = asyncio.Queue()\n")
    code, out, _ = _run(capsys, "app.py", "--format", "json", "--no-ruff")
    report = json.loads(out)
    assert code == 1
    assert report["counts"] == {"RT101": 1, "RT201": 1}
    assert (report["files"], report["lines"], report["new"]) == (1, 11, 2)
    first = report["findings"][0]
    assert {key: first[key] for key in ("path", "line", "col", "rule", "tool", "new")} == {
        "path": "app.py",
        "line": 9,
        "col": 18,
        "rule": "RT101",
        "tool": "runtime",
        "new": True,
    }
    assert len(first["fingerprint"]) == 20


def _sarif_fixture(project: Path) -> None:
    _write(project, "pkg/app.py", FANOUT + "\nq = asyncio.Queue()\n")
    _write(project, "pkg/dir with space/old.py", "import asyncio\nasyncio.create_task(f())\n")
    _write(project, "broken.py", "def broken(:\n")
    _write(project, "topology.yaml", "resources:\n  db: {kind: postgres, timeout: null}\n")


def test_sarif_validates_against_the_official_schema(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The SARIF 2.1.0 log validates against the OASIS schema (vendored from
    the standard's errata01 release), with and without a baseline, ruff's
    findings included when ruff is installed."""
    _sarif_fixture(project)
    _write(project, "slow.py", BLOCKING)
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft4Validator(schema)
    _run(capsys, ".", "--write-baseline", "baseline.json", "--no-ruff")
    _write(project, "pkg/new.py", "import asyncio\nasyncio.Queue()\n")
    for extra in ([], ["--baseline", "baseline.json"]):
        code, out, _ = _run(capsys, ".", "--format", "sarif", *extra)
        log = json.loads(out)
        errors = [error.message for error in validator.iter_errors(log)]
        assert errors == []
        assert code == 1
    run = log["runs"][0]
    rules = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    assert {"RT001", "RT101", "RT201", "RT501", "RT701"} <= set(rules)
    for result in run["results"]:
        assert rules[result["ruleIndex"]] == result["ruleId"]
    states = {
        result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]: result[
            "baselineState"
        ]
        for result in run["results"]
        if result["ruleId"].startswith("RT")
    }
    assert states["pkg/new.py"] == "new"
    assert states["pkg/dir%20with%20space/old.py"] == "unchanged"


def test_markdown_report_counts_and_trend(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Counts by rule and by directory, the worst files, and with a baseline
    the trend: what is new and what was fixed."""
    _write(project, "svc/a.py", FANOUT + "\nq = asyncio.Queue()\nr = asyncio.Queue()\n")
    _write(project, "svc/b.py", "import asyncio\nq = asyncio.Queue()\n")
    _write(project, "jobs/c.py", "import asyncio\nasyncio.ensure_future(f())\n")
    _run(capsys, ".", "--write-baseline", "baseline.json", "--no-ruff")
    _write(project, "svc/b.py", "import asyncio\nq = asyncio.Queue(10)\nx = asyncio.Queue(0)\n")
    code, out, _ = _run(
        capsys, ".", "--format", "markdown", "--baseline", "baseline.json", "--no-ruff"
    )
    assert code == 1
    assert "| `RT201` | unbounded-queue | 3 | 1 |" in out
    assert "| `svc` | 4 |" in out
    assert "| `svc/a.py` | 3 | RT101, RT201 |" in out
    assert "## Trend against the baseline" in out
    assert "| `RT201` | 3 | 3 | 1 | 1 |" in out  # baseline, now, new, fixed
    assert "6 finding(s) in the baseline, 6 now: 1 new, 1 fixed." in out
    assert "- `svc/b.py:3:5` **RT201**" in out


def test_baseline_survives_line_shifts(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A baselined finding stays known when lines are added above it; a new
    one fails the run, and a second copy of a baselined line is new."""
    app = _write(project, "app.py", FANOUT)
    assert _run(capsys, "app.py", "--write-baseline", "baseline.json", "--no-ruff")[0] == 0
    app.write_text("# a comment\n\n\n" + FANOUT, encoding="utf-8")
    code, out, _ = _run(capsys, "app.py", "--baseline", "baseline.json", "--no-ruff")
    assert code == 0
    assert out == (
        "0 new finding(s) (1 in all, 1 in the baseline) in 1 file(s), 12 line(s) of Python; "
        "ruff ASYNC rules: off.\n"
    )
    app.write_text(FANOUT + "    return await asyncio.gather(*(fetch(url) for url in urls))\n")
    code, out, _ = _run(capsys, "app.py", "--baseline", "baseline.json", "--no-ruff")
    assert code == 1
    assert out.startswith("app.py:10:18: RT101 ")
    assert out.count("RT101") == 1


def test_baseline_file_lists_findings_by_fingerprint(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The baseline is JSON with one entry per finding: fingerprint, rule,
    path, line and message."""
    _write(project, "app.py", FANOUT)
    _run(capsys, "app.py", "--write-baseline", "baseline.json", "--no-ruff")
    data = json.loads((project / "baseline.json").read_text(encoding="utf-8"))
    (entry,) = data["findings"]
    assert data["tool"] == "runtime audit"
    assert (entry["rule"], entry["path"], entry["line"]) == ("RT101", "app.py", 9)


def test_fingerprint_ignores_line_numbers_and_spacing() -> None:
    """The same rule on the same text in the same file is one fingerprint."""
    first = Finding("a.py", 3, 5, "RT201", "m", "f", "    q = asyncio.Queue()")
    moved = Finding("a.py", 30, 9, "RT201", "m", "f", "q  =  asyncio.Queue()")
    assert fingerprint(first) == fingerprint(moved)
    assert fingerprint(first) != fingerprint(Finding("b.py", 3, 5, "RT201", "m", "f", first.text))
    assert fingerprint(first) != fingerprint(Finding("a.py", 3, 5, "RT202", "m", "f", first.text))


def test_ignore_comments(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``# runtime: ignore[RT201]`` silences that rule on its line only; a
    bare ``# runtime: ignore`` silences every rule there."""
    _write(
        project,
        "app.py",
        """\
        import asyncio
        a = asyncio.Queue()  # runtime: ignore[RT201]
        b = asyncio.Queue()  # runtime: ignore[RT101, RT202]
        c = asyncio.Queue()  # runtime: ignore
        d = asyncio.Queue()  #runtime:ignore[RT202,RT201]
        e = asyncio.Queue()
        """,
    )
    result = audit(["app.py"], use_ruff=False)
    assert [(finding.rule, finding.line) for finding in result.findings] == [
        ("RT201", 3),
        ("RT201", 6),
    ]


def test_a_file_that_does_not_parse_is_reported_and_the_rest_scanned(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A syntax error is an RT001 finding at its line; the other files are
    still audited."""
    _write(project, "src/bad.py", "import asyncio\n\ndef broken(:\n    pass\n")
    _write(project, "src/good.py", FANOUT)
    code, out, _ = _run(capsys, "src", "--no-ruff")
    assert code == 1
    assert "src/bad.py:3:12: RT001 syntax error: invalid syntax\n" in out
    assert "src/good.py:9:18: RT101 " in out


def test_directories_are_walked_without_dependencies_and_caches(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python files below the paths given are audited, and topology files
    among the YAML; hidden directories, virtual environments, node_modules,
    __pycache__, build output and YAML that is not a topology are not."""
    queue = "import asyncio\nq = asyncio.Queue()\n"
    for name in (
        "app/main.py",
        "app/sub/pkg/mod.py",
        "app/.venv/lib/x.py",
        "app/.git/hooks/y.py",
        "app/node_modules/z/z.py",
        "app/__pycache__/m.py",
        "app/venv/lib/site-packages/dep.py",
        "app/build/lib/copy.py",
        "app/notes.txt",
    ):
        _write(project, name, queue)
    _write(project, "app/deploy/pod.yaml", "kind: Pod\nspec:\n  resources: {}\n")
    _write(project, "app/topology.yml", "resources:\n  db: {kind: postgres, timeout: null}\n")
    result = audit(["app"], use_ruff=False)
    assert sorted({finding.path for finding in result.findings}) == [
        "app/main.py",
        "app/sub/pkg/mod.py",
        "app/topology.yml",
    ]
    assert result.files == 3
    explicit = audit(["app/.venv/lib/x.py"], use_ruff=False)  # a file named is audited
    assert [finding.rule for finding in explicit.findings] == ["RT201"]


TOPOLOGY = """\
system: review
resources:
  llm:
    kind: llm
    provider: openai
    model: gpt-4o-mini
    timeout: null
  db:
    kind: postgres
    dsn: postgresql://localhost/x
    mailbox: {capacity: 200000}
  mcp:
    kind: mcp
    command: mcp-server-time
    timeout: 10s
supervisor:
  name: root
  children:
    - name: team
      children:
        - name: writer
          actor: actors.w:Writer
          mailbox:
            capacity: "${WRITER_BACKLOG:-50000}"
        - name: reader
          actor: actors.r:Reader
          mailbox: {capacity: 10000}
"""


def test_topology_rules_point_at_their_fields(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RT701 at ``timeout: null``, RT702 at an llm resource's kind when it
    has no rate, RT703 at each mailbox capacity over 10,000 (resources and
    nested actors, a variable's default included)."""
    _write(project, "topology.yaml", TOPOLOGY)
    result = audit(["topology.yaml"], use_ruff=False)
    assert [(f.rule, f.line, f.col) for f in result.findings] == [
        ("RT702", 4, 5),
        ("RT701", 7, 5),
        ("RT703", 11, 5),
        ("RT703", 24, 13),
    ]
    assert "actor 'writer' has a mailbox of 50,000" in result.findings[-1].message


def test_a_topology_that_does_not_load_is_reported(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A topology with a YAML error, or that the loader refuses, is RT001 at its line."""
    _write(project, "broken.yaml", "supervisor:\n  name: root\n  children: [\n")
    _write(project, "twice.yaml", "supervisor:\n  name: a\n  name: b\n")
    result = audit(["broken.yaml", "twice.yaml"], use_ruff=False)
    assert [(f.path, f.rule, f.line) for f in result.findings] == [
        ("broken.yaml", "RT001", 4),
        ("twice.yaml", "RT001", 3),
    ]
    assert result.findings[1].message == "refused: duplicate key 'name' (first at line 2)"


needs_ruff = pytest.mark.skipif(
    find_ruff() is None, reason="ruff is not installed (pip install -e '.[dev]')"
)


@needs_ruff
def test_ruff_findings_are_merged_under_their_own_ids(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ruff's ASYNC rules run on the same files; their findings keep ruff's
    ids, are silenced by the same comments, and a file that does not parse
    is reported once (as RT001)."""
    _write(
        project,
        "slow.py",
        BLOCKING + "\n\nasync def other():\n    time.sleep(2)  # runtime: ignore[ASYNC251]\n",
    )
    _write(project, "bad.py", "def broken(:\n")
    code, out, err = _run(capsys, ".")
    assert code == 1
    lines = out.splitlines()
    (at,) = [n for n, line in enumerate(lines) if line.startswith("slow.py:5:5: ASYNC251 ")]
    assert lines[at + 1].startswith("    fix: see https://docs.astral.sh/ruff/rules/")
    assert "slow.py:9" not in out
    assert out.count("bad.py:") == 1
    assert out.rstrip().endswith("ruff ASYNC rules: ran.")
    assert err == ""
    result = audit(["slow.py"])
    assert [(f.rule, f.tool) for f in result.findings] == [("ASYNC251", "ruff")]


def test_without_ruff_the_audit_says_so_once_and_goes_on(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ruff that is not there: one note on stderr, the audit's own findings
    as usual; --no-ruff leaves ruff out without a note."""
    _write(project, "a.py", BLOCKING)
    _write(project, "b.py", FANOUT)
    code, out, err = _run(capsys, ".", "--ruff", str(project / "no-such-ruff"))
    assert code == 1
    assert err == (
        "note: ruff is not installed, so its ASYNC rules (blocking calls in coroutines) were "
        "skipped; pip install ruff to include them\n"
    )
    assert "b.py:9:18: RT101 " in out
    assert "ASYNC" not in out.replace("ruff ASYNC rules", "")
    assert out.rstrip().endswith("ruff ASYNC rules: not installed.")
    code, out, err = _run(capsys, ".", "--no-ruff")
    assert (code, err) == (1, "")


def test_output_file_and_write_baseline(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--output writes the report to a file (nothing on stdout);
    --write-baseline records every finding and exits 0."""
    _write(project, "app.py", FANOUT)
    code, out, _ = _run(capsys, "app.py", "--no-ruff", "--format", "json", "--output", "r.json")
    assert (code, out) == (1, "")
    assert json.loads((project / "r.json").read_text(encoding="utf-8"))["counts"] == {"RT101": 1}
    code, out, _ = _run(capsys, "app.py", "--no-ruff", "--write-baseline", "b.json")
    assert code == 0
    assert "RT101" in out
    assert _run(capsys, "app.py", "--no-ruff", "--baseline", "b.json")[0] == 0


def test_the_command_line_runs_it(tmp_path: Path) -> None:
    """``python -m runtime audit`` in a process of its own: the report on
    stdout, exit 1 with findings."""
    _write(tmp_path, "app.py", FANOUT)
    result = run_cli("audit", "app.py", "--no-ruff", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("app.py:9:18: RT101 ")
    assert result.stderr == ""


def test_yaml_that_only_looks_like_a_topology_is_left_alone(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Helm values file has a top-level ``resources:`` of its own, and a
    template with ``{{ }}`` does not parse: neither is reported."""
    _write(project, "values.yaml", "replicas: 2\nresources:\n  limits: {cpu: 500m}\n")
    _write(project, "chart.yaml", "resources:\n  {{- toYaml .Values.resources | nindent 2 }}\n")
    result = audit(["values.yaml", "chart.yaml"], use_ruff=False)
    assert (result.findings, result.files) == ((), 0)
