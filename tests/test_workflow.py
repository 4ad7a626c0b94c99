"""Workflows in process, on the virtual clock: scheduling, retries with
feedback, fallbacks, needs_attention, templates, the journal and resuming."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry

import runtime
from runtime import ChildSpec, RetrySpec, SupervisorSpec, Topology, open_system
from runtime.errors import ActorNotFound, TopologyError
from runtime.workflow import Journal, Step, StepResult, Workflow, current_step_key, step_key
from tests.workflow_agents import Echo, Job, Relay, Tally, Verdict, Worker


def topology(tally: Tally, *, workflows: Any = None, **answers: str) -> Topology:
    """``root/worker`` (16 at once) and one agent per entry of ``answers``
    (named by the key, always answering the value)."""
    children = [ChildSpec(name="worker", actor=Worker, concurrency=16, args={"tally": tally})]
    children += [
        ChildSpec(name=name, actor=Worker, args={"tally": tally, "answer": answer})
        for name, answer in answers.items()
    ]
    children.append(ChildSpec(name="relay", actor=Relay))
    return Topology(
        supervisor=SupervisorSpec(name="root", children=children), workflows=workflows or {}
    )


def jobs(*names: str, sleep: float = 1.0, **fields: Any) -> list[Step]:
    return [Step(name, "root/worker", Job(name, sleep=sleep), **fields) for name in names]


async def test_sequential_runs_steps_in_order_one_at_a_time(autojump_clock: trio.abc.Clock) -> None:
    """``sequential``: each step starts once the one before it ended."""
    tally = Tally()
    wf = Workflow("seq", jobs("a", "b", "c", "d"), strategy="sequential", max_parallel=8)
    with trio.fail_after(60):
        async with open_system(topology(tally), store="memory://") as system:
            result = await system.run_workflow(wf, run_id="r")
    assert result.status == "succeeded"
    assert tally.events == [(kind, n) for n in "abcd" for kind in ("start", "end")]
    assert tally.peak == 1


async def test_parallel_runs_at_most_max_parallel_at_once(autojump_clock: trio.abc.Clock) -> None:
    """``parallel`` with ten steps and ``max_parallel=3``: three asks at the
    agent at most, and at some point three; every step runs once."""
    tally = Tally()
    wf = Workflow("par", jobs(*"abcdefghij"), strategy="parallel", max_parallel=3)
    with trio.fail_after(60):
        async with open_system(topology(tally), store="memory://") as system:
            started = trio.current_time()
            result = await system.run_workflow(wf)
            elapsed = trio.current_time() - started
    assert result.status == "succeeded"
    assert tally.peak == 3
    assert sorted(tally.order()) == list("abcdefghij")
    assert elapsed == pytest.approx(4.0, abs=0.1)  # ceil(10 / 3) rounds of one second


async def test_dag_starts_a_step_after_its_dependencies_in_priority_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A diamond a -> (b, c, d) -> e: b, c and d start only after a ended,
    the high-priority one first (``max_parallel=1``), then the others in
    listed order; e starts after all three ended."""
    tally = Tally()
    steps = [
        Step("a", "root/worker", Job("a", sleep=1)),
        Step("b", "root/worker", Job("b", sleep=1), depends_on=["a"]),
        Step("c", "root/worker", Job("c", sleep=1), depends_on=["a"], priority="low"),
        Step("d", "root/worker", Job("d", sleep=1), depends_on=["a"], priority="high"),
        Step("e", "root/worker", Job("e", sleep=1), depends_on=["b", "c", "d"]),
    ]
    with trio.fail_after(60):
        async with open_system(topology(tally), store="memory://") as system:
            result = await system.run_workflow(Workflow("dag", steps, max_parallel=1))
            assert tally.order() == ["a", "d", "b", "c", "e"]
            tally.events.clear()
            await system.run_workflow(Workflow("dag", steps, max_parallel=3))
    assert result.status == "succeeded"
    events = tally.events
    assert events[:2] == [("start", "a"), ("end", "a")]
    assert {name for _, name in events[2:5]} == {"b", "c", "d"}  # started together
    assert events[-2:] == [("start", "e"), ("end", "e")]
    assert tally.peak == 3


async def test_invalid_result_is_retried_with_feedback_then_fallback_then_needs_attention(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A result ``validate`` refuses is asked again with the feedback in the
    message's ``feedback`` field, ``retry.attempts`` times, then of each
    fallback in order; all refused: the step and the run need attention,
    and the step that depends on it never starts."""
    tally = Tally()
    steps = [
        Step(
            "draft",
            "root/worker",
            Job("draft", answer="bad draft"),
            retry=RetrySpec(attempts=2, initial=1),
            fallback=["root/second", "root/third"],
            validate="tests.workflow_agents:no_bad_answers",
        ),
        Step("publish", "root/worker", Job("publish"), depends_on=["draft"]),
    ]
    agents = {"second": "bad again", "third": "bad too"}
    with trio.fail_after(60):
        async with open_system(topology(tally, **agents), store="memory://") as system:
            result = await system.run_workflow(Workflow("doc", steps), run_id="r1")
            stats = system.workflow_statistics()
    assert result.status == "needs_attention"
    draft = result.steps["draft"]
    assert draft.status == "needs_attention"
    assert draft.attempts == 6 and draft.agent == "root/third"
    assert draft.error is not None and "'bad too' is bad" in draft.error
    assert result.steps["publish"] == StepResult("pending")
    feedbacks = [message.feedback for message in tally.messages]
    assert feedbacks[0] is None
    assert feedbacks[1] == "'bad draft' is bad: answer again"
    assert feedbacks[2] == "'bad draft' is bad: answer again"  # the fallback gets it too
    assert feedbacks[4] == "'bad again' is bad: answer again"
    assert "publish" not in tally.runs
    assert stats.needing_attention == {"doc": 1}
    assert stats.retries == {"doc": 3} and stats.fallbacks == {"doc": 2}


async def test_a_fallback_that_passes_validation_succeeds(autojump_clock: trio.abc.Clock) -> None:
    """The first agent's answers are refused; the fallback's passes: the step
    succeeds with the fallback's value, and the run goes on."""
    tally = Tally()
    steps = [
        Step(
            "draft",
            "root/worker",
            Job("draft", answer="bad"),
            fallback=["root/second"],
            validate="tests.workflow_agents:no_bad_answers",
        ),
        Step("publish", "root/worker", Job("publish"), depends_on=["draft"]),
    ]
    with trio.fail_after(60):
        async with open_system(topology(tally, second="fine"), store="memory://") as system:
            result = await system.run_workflow(Workflow("doc", steps))
    assert result.status == "succeeded"
    assert result.steps["draft"] == StepResult("succeeded", "fine", 2, "root/second")


async def test_an_agent_that_keeps_failing_fails_the_run(autojump_clock: trio.abc.Clock) -> None:
    """No validate, no fallback: a step whose agent crashes on every attempt
    fails after ``retry.attempts`` with backoff on the trio clock; a step
    already running finishes, and no other starts."""
    tally = Tally()
    steps = [
        # On an actor of its own: a crash cancels what its actor handles.
        Step("slow", "root/second", Job("slow", sleep=100), timeout=200),
        Step(
            "flaky",
            "root/worker",
            Job("flaky", fail_first=10),
            retry=RetrySpec(attempts=3, initial=1, multiplier=2),
        ),
        Step("after", "root/worker", Job("after"), depends_on=["flaky"]),
    ]
    with trio.fail_after(300):
        async with open_system(topology(tally, second="slow"), store="memory://") as system:
            started = trio.current_time()
            result = await system.run_workflow(Workflow("f", steps), run_id="x")
            elapsed = trio.current_time() - started
    assert result.status == "failed"
    flaky = result.steps["flaky"]
    assert flaky.status == "failed" and flaky.attempts == 3
    assert flaky.error is not None and "ActorFailed" in flaky.error
    assert result.steps["slow"].status == "succeeded"  # it was running: it finished
    assert result.steps["after"].status == "pending"
    assert tally.runs["flaky"] == 3
    assert elapsed == pytest.approx(100, abs=0.5)


async def test_retry_after_a_crash_succeeds(autojump_clock: trio.abc.Clock) -> None:
    """A step whose agent crashes once succeeds on its second attempt."""
    tally = Tally()
    steps = [Step("a", "root/worker", Job("a", fail_first=1), retry={"attempts": 2})]
    with trio.fail_after(60):
        async with open_system(topology(tally), store="memory://") as system:
            result = await system.run_workflow(Workflow("r", steps))
    assert result.steps["a"] == StepResult("succeeded", "a", 2, "root/worker")


async def test_the_step_key_reaches_the_handler_and_what_it_asks(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Each attempt's ask carries ``<run_id>/<step>/<attempt>``: the agent's
    handler reads it with ``current_step_key()``, and so does an actor the
    agent asks in turn; outside a step there is none."""
    tally = Tally()
    steps = [
        Step("a", "root/worker", Job("a", fail_first=1), retry=RetrySpec(attempts=2)),
        Step("b", "root/relay", Job("b"), depends_on=["a"]),
    ]
    with trio.fail_after(60):
        async with open_system(topology(tally), store="memory://") as system:
            await system.run_workflow(Workflow("k", steps), run_id="run7")
            await system.ref("root/worker").ask(Job("outside"))
    assert tally.keys == ["run7/a/1", "run7/a/2", "run7/b/1", None]
    assert current_step_key() is None


async def test_an_unknown_agent_is_refused_before_anything_runs(
    autojump_clock: trio.abc.Clock,
) -> None:
    tally = Tally()
    steps = [*jobs("a"), Step("b", "root/nobody", Job("b"))]
    with trio.fail_after(60):
        async with open_system(topology(tally), store="memory://") as system:
            with pytest.raises(ActorNotFound):
                await system.run_workflow(Workflow("u", steps))
    assert tally.events == []


def test_a_workflow_in_code_is_checked_when_made() -> None:
    """A cycle, an unknown step in depends_on, duplicate names and
    depends_on under ``parallel`` are refused with what is wrong."""
    with pytest.raises(ValueError, match="a cycle: a -> b -> a"):
        Workflow("c", [Step("a", "x", 1, depends_on=["b"]), Step("b", "x", 1, depends_on=["a"])])
    with pytest.raises(ValueError, match="unknown step 'z'"):
        Workflow("c", [Step("a", "x", 1, depends_on=["z"])])
    with pytest.raises(ValueError, match="duplicate step name 'a'"):
        Workflow("c", [Step("a", "x", 1), Step("a", "x", 2)])
    with pytest.raises(ValueError, match="runs every step at once"):
        Workflow("c", [Step("a", "x", 1), Step("b", "x", 1, depends_on=["a"])], strategy="parallel")


TEMPLATE = {
    "judged": {
        "inputs": ["who", "score"],
        "steps": [
            {
                "name": "judge",
                "agent": "root/worker",
                "message": {"type": "tests.workflow_agents:Judge", "score": "${inputs.score}"},
            },
            {
                "name": "greet",
                "agent": "root/worker",
                "depends_on": ["judge"],
                "message": {
                    "type": "tests.workflow_agents:Echo",
                    "text": "hello ${inputs.who}, ok=${steps.judge.result.ok}",
                    "count": "${steps.judge.result.score}",
                    "verdict": "${steps.judge.result}",
                },
            },
        ],
    }
}


async def test_templates_fill_in_inputs_and_step_results(autojump_clock: trio.abc.Clock) -> None:
    """A template's messages take ``${inputs.NAME}`` and
    ``${steps.STEP.result}`` (and an attribute of it), each structured into
    its field's type: the score "3" is the int 3; a reference inside a
    longer string is formatted into it."""
    tally = Tally()
    spec = topology(tally, workflows=TEMPLATE)
    with trio.fail_after(60):
        async with open_system(spec, store="memory://") as system:
            result = await system.run_workflow(
                "judged", inputs={"who": "ada", "score": "3"}, run_id="t"
            )
            with pytest.raises(ValueError, match="missing input"):
                system.workflow("judged", who="x")
            with pytest.raises(ValueError, match="cannot take 'many'"):
                system.workflow("judged", who="x", score="many")
            with pytest.raises(KeyError, match="no workflow named 'nope'"):
                system.workflow("nope")
    assert result.status == "succeeded"
    assert result.steps["judge"].value == Verdict(True, 3)
    assert result.steps["greet"].value == Echo("hello ada, ok=True", 3, Verdict(True, 3))


async def test_a_rerun_with_the_same_run_id_skips_the_steps_that_succeeded(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The first run fails at ``b`` (its agent crashes twice); run again
    with the same ``run_id``, ``a`` is taken from the journal (with its
    value), ``b`` and ``c`` run. A third run runs nothing. Another
    ``run_id`` starts afresh."""
    tally = Tally()
    steps = [
        Step("a", "root/worker", Job("a", answer="from a")),
        Step("b", "root/worker", Job("b", fail_first=2), depends_on=["a"]),
        Step("c", "root/worker", Job("c"), depends_on=["b"]),
    ]
    wf = Workflow("resume", steps)
    with trio.fail_after(60):
        async with open_system(topology(tally), store="memory://") as system:
            first = await system.run_workflow(wf, run_id="r1")
            assert first.status == "failed" and first.steps["a"].status == "succeeded"
            first_b = await system.run_workflow(wf, run_id="r1")
            second = await system.run_workflow(wf, run_id="r1")
            third = await system.run_workflow(wf, run_id="r1")
            other = await system.run_workflow(wf, run_id="r2")
    assert first_b.status == "failed"  # b's second crash
    assert second.status == "succeeded"
    assert second.resumed == ("a",)
    assert second.steps["a"].value == "from a"
    assert third.resumed == ("a", "b", "c") and third.status == "succeeded"
    assert other.resumed == () and other.status == "succeeded"
    assert tally.runs == {"a": 2, "b": 4, "c": 2}


async def test_a_cancelled_run_resumes_with_the_same_keys(autojump_clock: trio.abc.Clock) -> None:
    """A run cancelled while ``b`` runs (as a killed process would stop):
    the journal has ``a``; the next run with that ``run_id`` does not run
    ``a`` again, and ``b``'s ask carries the same key as before."""
    tally = Tally()
    steps = [
        Step("a", "root/worker", Job("a", sleep=1)),
        Step("b", "root/worker", Job("b", sleep=10), depends_on=["a"]),
    ]
    wf = Workflow("cancel", steps)
    store = runtime.MemoryStore()
    with trio.fail_after(60):
        async with open_system(topology(tally), store=store) as system:
            with trio.move_on_after(5):
                await system.run_workflow(wf, run_id="c1")
            assert system.workflow_statistics().running == ()
            result = await system.run_workflow(wf, run_id="c1")
    assert result.status == "succeeded" and result.resumed == ("a",)
    assert tally.runs == {"a": 1, "b": 2}
    assert tally.keys == ["c1/a/1", "c1/b/1", "c1/b/1"]
    assert await store.paths() == []  # journals are no actor's checkpoint
    # ``a`` has its own entry; ``b`` ended the run: the run's last write has it.
    assert await store.load(step_key("cancel", "c1", "a")) is not None
    assert await store.load(step_key("cancel", "c1", "b")) is None
    journal = Journal(store, "cancel", "c1", ["a", "b"])
    steps = await journal.load()
    assert journal.status == "succeeded"
    assert {name: step.status for name, step in steps.items()} == {
        "a": "succeeded",
        "b": "succeeded",
    }


class SizedStore(runtime.MemoryStore):
    """A memory store that keeps the path and size of every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, int]] = []

    async def save(self, path: str, data: str, version: int) -> int:
        self.writes.append((path, len(data)))
        return await super().save(path, data, version)


async def test_each_journal_write_has_one_step_whatever_the_run_length(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A 40-step sequential run writes the run's entry, each step but the
    last in an entry of its own, then the run's entry with its status and
    the last step: 41 writes, none larger than the first step's."""
    tally = Tally()
    names = [f"s{index:02}" for index in range(40)]
    wf = Workflow("long", jobs(*names), strategy="sequential")
    store = SizedStore()
    with trio.fail_after(600):
        async with open_system(topology(tally), store=store) as system:
            result = await system.run_workflow(wf, run_id="l1")
    assert result.status == "succeeded"
    run_key = "workflow/long/l1"
    assert [path for path, _ in store.writes] == [
        run_key,
        *(step_key("long", "l1", name) for name in names[:-1]),
        run_key,
    ]
    step_sizes = [size for path, size in store.writes[1:-1]]
    assert max(step_sizes) == min(step_sizes)
    assert store.writes[-1][1] < 2 * (store.writes[0][1] + step_sizes[0])
    journal = Journal(store, "long", "l1", names)
    assert set(await journal.load()) == set(names)


async def test_a_step_journaled_as_failed_is_written_over_when_it_succeeds(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``a`` fails while ``b`` runs: its own entry says failed, and ``b``,
    ending the run, is in the run's entry. Run again, ``a`` succeeds over
    its entry (the version it read), ``b`` is taken from the run's entry;
    a third run runs nothing."""
    tally = Tally()
    steps = [
        Step("a", "root/worker", Job("a", sleep=1, fail_first=1)),
        Step("b", "root/other", Job("b", sleep=5)),  # its own actor: a's crash spares it
        Step("c", "root/worker", Job("c"), depends_on=["a"]),
    ]
    wf = Workflow("over", steps)
    store = SizedStore()
    with trio.fail_after(60):
        async with open_system(topology(tally, other="b"), store=store) as system:
            first = await system.run_workflow(wf, run_id="o1")
            second = await system.run_workflow(wf, run_id="o1")
            third = await system.run_workflow(wf, run_id="o1")
    assert first.status == "failed" and first.steps["b"].status == "succeeded"
    assert second.status == "succeeded" and second.resumed == ("b",)
    assert third.resumed == ("a", "b", "c")
    assert tally.runs == {"a": 2, "b": 1, "c": 1}
    a_key = step_key("over", "o1", "a")
    assert [path for path, _ in store.writes].count(a_key) == 2
    assert (await store.load(a_key) or (0, ""))[0] == 2


async def test_a_one_step_run_makes_one_write(autojump_clock: trio.abc.Clock) -> None:
    tally = Tally()
    store = SizedStore()
    with trio.fail_after(60):
        async with open_system(topology(tally), store=store) as system:
            result = await system.run_workflow(Workflow("one", jobs("only")), run_id="o1")
    assert result.status == "succeeded"
    assert [path for path, _ in store.writes] == ["workflow/one/o1"]


async def test_a_run_in_flight_keeps_the_system_busy_and_shows_in_status(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a run waits out a retry's backoff, no actor works, yet the
    system is not idle; progress and ``/status`` show the run and its steps."""
    from runtime._endpoint import status_document

    # The backoff's jitter draws from the whole range below ``initial``:
    # half of it (50 s) is still running at the look, 1 s in.
    monkeypatch.setattr("runtime.workflow.random.random", lambda: 0.5)

    tally = Tally()
    steps = [
        *jobs("a", sleep=0),
        Step(
            "b",
            "root/worker",
            Job("b", fail_first=1),
            depends_on=["a"],
            retry=RetrySpec(attempts=2, initial=100),
        ),
    ]
    seen: list[Any] = []
    with trio.fail_after(300):
        async with open_system(topology(tally), store="memory://") as system:
            async with trio.open_nursery() as nursery:
                wf = Workflow("busy", steps)
                nursery.start_soon(functools.partial(system.run_workflow, wf, run_id="busy-1"))
                await trio.sleep(1)
                seen = [
                    system.is_idle(),
                    system.progress().runs,
                    status_document(system)["workflows"]["running"],
                ]
            after = [system.is_idle(), status_document(system)["workflows"]]
    assert seen[0] is False
    assert seen[1] == (("busy/busy-1", 1, 2),)
    assert seen[2] == [
        {
            "workflow": "busy",
            "run_id": "busy-1",
            "status": "running",
            "steps": {"a": "succeeded", "b": "running"},
        }
    ]
    assert after[0] is True
    assert after[1]["recent"][0]["status"] == "succeeded"


async def test_metrics_count_runs_retries_fallbacks_and_attention(
    autojump_clock: trio.abc.Clock,
) -> None:
    tally = Tally()
    refused = Step(
        "x",
        "root/worker",
        Job("x"),
        fallback=["root/second"],
        validate="tests.workflow_agents:always_refuse",
    )
    retried = Step("y", "root/worker", Job("y", fail_first=1), retry=RetrySpec(attempts=2))
    registry = CollectorRegistry()
    with trio.fail_after(60):
        async with open_system(
            topology(tally, second="s"), store="memory://", registry=registry
        ) as system:
            await system.run_workflow(Workflow("m", [refused]), run_id="1")
            await system.run_workflow(Workflow("m", [retried]), run_id="2")
            value = registry.get_sample_value
            assert (
                value("runtime_workflow_runs_total", {"workflow": "m", "outcome": "succeeded"}) == 1
            )
            assert (
                value(
                    "runtime_workflow_runs_total", {"workflow": "m", "outcome": "needs_attention"}
                )
                == 1
            )
            assert value("runtime_workflow_runs_needing_attention", {"workflow": "m"}) == 1
            assert value("runtime_workflow_step_retries_total", {"workflow": "m"}) == 1
            assert value("runtime_workflow_step_fallbacks_total", {"workflow": "m"}) == 1
            count = value(
                "runtime_workflow_step_duration_seconds_count", {"workflow": "m", "step": "y"}
            )
            assert count == 1
            await system.run_workflow(Workflow("m", [retried]), run_id="1")  # run again
            assert value("runtime_workflow_runs_needing_attention", {"workflow": "m"}) is None


BAD_TEMPLATE = """\
system: wf
supervisor:
  name: root
  children:
    - {name: worker, actor: tests.workflow_agents:Worker}
workflows:
  bad:
    inputs: [who]
    steps:
      - name: a
        agent: root/worker
        depends_on: [c]
        message: {type: "tests.workflow_agents:Job", name: "${inputs.who}"}
      - name: b
        agent: root/wrker
        depends_on: [a, nowhere]
        message: {type: "tests.workflow_agents:Nothing"}
      - name: c
        agent: root/worker
        depends_on: [a]
        message: {type: "tests.workflow_agents:Job", name: x, colour: red}
"""


def test_a_bad_template_is_refused_with_file_line_and_field() -> None:
    """A cycle, an unknown step, an unknown agent, a message type that does
    not exist and a field the message does not have: each reported at its
    line, with the field's path."""
    with pytest.raises(TopologyError) as caught:
        runtime.parse_topology(BAD_TEMPLATE, "wf.yaml")
    assert caught.value.errors == [
        "wf.yaml:12: workflows.bad.steps[0].depends_on: a cycle: a -> c -> a",
        "wf.yaml:15: workflows.bad.steps[1].agent: no actor at 'root/wrker' "
        "(did you mean 'root/worker'?)",
        "wf.yaml:16: workflows.bad.steps[1].depends_on: unknown step 'nowhere'",
        "wf.yaml:17: workflows.bad.steps[1].message.type: cannot import "
        "'tests.workflow_agents:Nothing': module 'tests.workflow_agents' has no attribute "
        "'Nothing'",
        "wf.yaml:21: workflows.bad.steps[2].message.colour: Job has no field 'colour'; "
        "its fields: name, answer, sleep, fail_first, feedback",
    ]


def test_a_root_named_workflow_is_refused() -> None:
    """Journals live at ``workflow/...`` in the store: no actor path may."""
    with pytest.raises(TopologyError, match="names the workflow journals"):
        runtime.parse_topology("supervisor: {name: workflow}\n", "t.yaml")


def test_the_public_names_of_runtime_workflow() -> None:
    """``runtime.workflow`` exports the names docs/workflows.md documents."""
    import runtime.workflow

    assert sorted(runtime.workflow.__all__) == [
        "Invalid",
        "RunSummary",
        "Step",
        "StepResult",
        "Workflow",
        "WorkflowResult",
        "WorkflowStatistics",
        "current_step_key",
    ]
