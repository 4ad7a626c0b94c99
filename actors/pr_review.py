"""Pull request review and deployment: the agents of ``supervisors/pr_review.yaml``.

``Orchestrator`` takes the open pull requests from ``PullRequestSource`` and
runs the topology's workflow ``pr`` for each one, a few PRs at a time. The
workflow has three steps:

1. ``Reviewer`` asks the ``llm`` resource to review the diff and turns the
   answer into a verdict, ``approved`` or ``rejected``;
2. ``CI`` runs the test suite through the ``ci`` resource (an MCP server,
   ``actors/ci_server.py``), retrying a failed run with backoff in case the
   failure was a flaky test: ``green`` or ``red``. Review and CI run at once;
3. ``release``, once both ended: ``Deployer`` is the gate: an approved and
   green PR is rolled out to the PR's target ``Environment``. Each
   environment is an actor handling one message at a time, and each rollout
   holds the lock ``deploy:<env>`` (``ctx.lock``), so rollouts to one
   environment never overlap, also with another process deploying to it on
   the same store; a crashed deployer cannot leave the lock held past its
   ttl.

Each PR's run is journaled in the checkpoint store (``workflow/pr/pr-<n>``)
after every step, so a process killed mid-run and started again on the
same store goes on from there without redoing finished steps. Deployments
are idempotent by PR number (the environments and the deployer keep theirs
in checkpointed state), so a deploy step repeated after a kill never
deploys a PR twice.

Each agent appends a JSON line to the file named by ``journal`` (when one
is given) as a step completes, which is how the tests check that nothing
was done twice.
"""

from __future__ import annotations

import json
import os
import time

import attrs
import structlog
import trio

import runtime
from runtime.resources.llm import Chat
from runtime.resources.mcp import CallTool

log = structlog.get_logger("pr_review")

REJECT_MARKER = "DO NOT MERGE"
SYSTEM_PROMPT = (
    "You review pull requests to an order-management web service. On the first line "
    "answer APPROVE, or REJECT followed by the reason; then explain in a few sentences. "
    f"Reject changes marked {REJECT_MARKER}, hard-coded credentials and disabled checks."
)

# -- pull requests --------------------------------------------------------------------


@attrs.frozen
class PullRequest:
    """An open pull request: what it changes and where it deploys to."""

    number: int
    title: str
    environment: str
    diff: str


_SAMPLES: tuple[tuple[str, str, str], ...] = (
    (
        "Retry idempotent requests in the HTTP client",
        "staging",
        "--- a/src/net/client.py\n+++ b/src/net/client.py\n"
        "@@ -40,3 +40,6 @@ class Client:\n"
        "     async def get(self, url):\n"
        "-        return await self._send('GET', url)\n"
        "+        for attempt in range(3):\n"
        "+            with contextlib.suppress(ConnectError):\n"
        "+                return await self._send('GET', url)\n",
    ),
    (
        "Fix a typo in the README",
        "staging",
        "--- a/README.md\n+++ b/README.md\n@@ -1,2 +1,2 @@\n"
        "-Order managment service\n+Order management service\n",
    ),
    (
        "Log in as admin without a password for the demo",
        "production",
        "--- a/src/auth.py\n+++ b/src/auth.py\n@@ -12,2 +12,4 @@ def login(user, password):\n"
        f"+    # {REJECT_MARKER}: demo shortcut\n"
        "+    if user == 'admin':\n+        return Session(user)\n",
    ),
    (
        "Speed up the monthly report query",
        "production",
        "--- a/src/reports.py\n+++ b/src/reports.py\n@@ -30,2 +30,2 @@ def monthly(db):\n"
        "-    rows = [r for r in db.all_orders() if r.month == month]\n"
        "+    rows = db.orders_in_month(month)\n",
    ),
    (
        "Accept orders without a customer",
        "staging",
        "--- a/src/orders.py\n+++ b/src/orders.py\n@@ -8,4 +8,2 @@ def parse_order(data):\n"
        "-    if data.get('customer') is None:\n"
        "-        raise ValueError('an order needs a customer')\n"
        "     return Order(**data)\n",
    ),
    (
        "Bump the connection pool of the HTTP client to 20",
        "production",
        "--- a/src/net/pool.py\n+++ b/src/net/pool.py\n@@ -3,1 +3,1 @@\n"
        "-POOL_SIZE = 10\n+POOL_SIZE = 20\n",
    ),
    (
        "Paginate GET /orders",
        "staging",
        "--- a/src/api.py\n+++ b/src/api.py\n@@ -20,2 +20,3 @@ async def list_orders(request):\n"
        "-    return await db.orders()\n"
        "+    page = int(request.query.get('page', 1))\n"
        "+    return await db.orders(offset=(page - 1) * 50, limit=50)\n",
    ),
    (
        "Drop the per-customer rate limit",
        "production",
        "--- a/src/limits.py\n+++ b/src/limits.py\n@@ -15,3 +15,1 @@ def check(customer):\n"
        "-    if customer.requests_this_minute > 100:\n"
        "-        raise TooManyRequests(customer.id)\n"
        "     return True\n",
    ),
)


def sample_pull_requests(count: int) -> tuple[PullRequest, ...]:
    """``count`` pull requests, numbered from 1, cycling through eight samples."""
    return tuple(
        PullRequest(number, *_SAMPLES[(number - 1) % len(_SAMPLES)])
        for number in range(1, count + 1)
    )


@attrs.frozen
class ListPullRequests:
    """Ask the source for the open pull requests."""


class PullRequestSource(runtime.Actor[None]):
    """The open pull requests (a code host's API in a real system)."""

    def __init__(self, *, count: int = 8) -> None:
        self.count = int(count)

    @runtime.handler
    async def list_open(self, msg: ListPullRequests) -> tuple[PullRequest, ...]:
        return sample_pull_requests(self.count)


async def record_step(journal: str, **fields: object) -> None:
    """Append one JSON line for a completed step to ``journal`` (nothing if it is "")."""
    if not journal:
        return
    line = json.dumps({"time": time.time(), "pid": os.getpid(), **fields}) + "\n"
    async with await trio.open_file(journal, "a", encoding="utf-8") as file:
        await file.write(line)


# -- review ---------------------------------------------------------------------------


@attrs.frozen
class Review:
    """Ask the reviewer for a verdict: ``approved`` or ``rejected``."""

    pr: PullRequest


def verdict_of(answer: str) -> str:
    """The verdict in a model's answer: ``approved`` or ``rejected``.

    A model following ``SYSTEM_PROMPT`` starts with APPROVE or REJECT. An
    answer that starts with neither is rejected when it carries the
    ``DO NOT MERGE`` marker; the fake backend of ``provider: fake`` answers
    with the prompt itself, so offline a diff with the marker is rejected.
    """
    words = answer.split(maxsplit=1)
    first = words[0].upper() if words else ""
    if first.startswith(("APPROVE", "REJECT")):
        return "approved" if first.startswith("APPROVE") else "rejected"
    return "rejected" if REJECT_MARKER in answer else "approved"


class Reviewer(runtime.Actor[None]):
    """Reviews a diff with the ``llm`` resource.

    An error from the resource (its retries spent, its breaker open) is not
    caught: the reviewer crashes, its supervisor restarts it after a backoff,
    and the orchestrator tries the review again later.
    """

    def __init__(self, *, journal: str = "") -> None:
        self.journal = journal

    @runtime.handler
    async def review(self, msg: Review) -> str:
        pr = msg.pr
        prompt = f"Pull request #{pr.number}: {pr.title}\n\n{pr.diff}"
        answer = await self.ctx.resource("llm").ask(
            Chat.prompt(prompt, system=SYSTEM_PROMPT, max_tokens=300), timeout=120
        )
        verdict = verdict_of(answer.text)
        await record_step(self.journal, pr=pr.number, step="review", result=verdict)
        return verdict


# -- CI -------------------------------------------------------------------------------


@attrs.frozen
class RunCI:
    """Ask the CI agent for the test result: ``green`` or ``red``."""

    pr: PullRequest


class CI(runtime.Actor[None]):
    """Runs the tests through the ``ci`` MCP resource's ``run_tests`` tool.

    A failed run is run again, up to ``attempts`` runs, waiting ``backoff``
    seconds before the second and twice as long before each next one: a
    flaky test passes on a retry, a broken one fails every run. The retries
    are application-level (the tool answered; the tests failed), so they are
    counted with ``ctx.progress(retried=1)``; transport failures are retried
    by the resource itself.
    """

    def __init__(self, *, attempts: int = 3, backoff: float = 0.05, journal: str = "") -> None:
        self.attempts = int(attempts)
        self.backoff = float(backoff)
        self.journal = journal

    @runtime.handler
    async def run_ci(self, msg: RunCI) -> str:
        pr = msg.pr
        ci = self.ctx.resource("ci")
        arguments = {"pr": pr.number, "diff": pr.diff}
        failed: list[str] = []
        for attempt in range(1, self.attempts + 1):
            result = await ci.ask(CallTool("run_tests", arguments, raise_on_error=True))
            assert result.structured is not None  # run_tests returns structured content
            failed = list(result.structured["failed"])
            if not failed or attempt == self.attempts:
                break
            log.info("ci_retry", pr=pr.number, attempt=attempt, failed=failed)
            self.ctx.progress(retried=1)
            await trio.sleep(self.backoff * 2 ** (attempt - 1))
        status = "red" if failed else "green"
        await record_step(
            self.journal, pr=pr.number, step="ci", result=status, runs=attempt, failed=failed
        )
        return status


# -- deployment -----------------------------------------------------------------------


@attrs.frozen
class Deployment:
    """A PR rolled out to an environment, with wall-clock times in seconds."""

    pr: int
    environment: str
    requested: float
    started: float
    finished: float


@attrs.frozen
class Rollout:
    """Ask an environment to roll out a PR (at once if it is already live there)."""

    pr: int
    requested: float


@attrs.define
class EnvironmentState:
    live: int | None = None
    history: list[Deployment] = attrs.Factory(list)


class Environment(runtime.Actor[EnvironmentState]):
    """One deployment target. Handling one message at a time, it serializes
    the rollouts to it; its checkpointed history makes a rollout idempotent."""

    def __init__(self, *, rollout_seconds: float = 0.1, journal: str = "") -> None:
        self.rollout_seconds = float(rollout_seconds)
        self.journal = journal

    @runtime.handler
    async def rollout(self, msg: Rollout) -> Deployment:
        for done in self.state.history:
            if done.pr == msg.pr:
                return done  # already live: a repeated request deploys nothing
        name = self.ctx.path.rsplit("/", 1)[-1]
        # One rollout per environment at a time, whoever deploys to it.
        async with self.ctx.lock(f"deploy:{name}", ttl=30.0):
            started = time.time()
            await trio.sleep(self.rollout_seconds)  # stands in for the real rollout
            deployment = Deployment(msg.pr, name, msg.requested, started, time.time())
            self.state.history.append(deployment)
            self.state.live = msg.pr
            await self.ctx.checkpoint()  # durable before it is journaled and answered
        await record_step(self.journal, step="deploy", **attrs.asdict(deployment))
        return deployment


@attrs.frozen
class Deploy:
    """Ask the deployer to deploy a PR to its environment."""

    pr: PullRequest


@attrs.frozen
class Release:
    """Ask the deployer to deploy a PR if its review and CI passed."""

    pr: PullRequest
    review: str
    ci: str


@attrs.define
class DeployerState:
    deployments: dict[str, Deployment] = attrs.Factory(dict)  # by PR number


class Deployer(runtime.Actor[DeployerState]):
    """Deploys PRs: sends each to its environment's actor and records the result.

    ``environments`` is the path under which the environment actors live.
    """

    def __init__(self, *, environments: str) -> None:
        self.environments = environments

    @runtime.handler
    async def deploy(self, msg: Deploy) -> Deployment:
        key = str(msg.pr.number)
        if (done := self.state.deployments.get(key)) is not None:
            return done
        environment = self.ctx.ref(f"{self.environments}/{msg.pr.environment}")
        deployment: Deployment = await environment.ask(
            Rollout(msg.pr.number, requested=time.time()), timeout=120
        )
        self.state.deployments[key] = deployment
        return deployment

    @runtime.handler
    async def release(self, msg: Release) -> str:
        """The gate: deploy an approved, green PR; the PR's outcome."""
        if msg.review != "approved":
            return "rejected"
        if msg.ci != "green":
            return "red"
        await self.deploy(Deploy(msg.pr))
        return "deployed"


# -- orchestration --------------------------------------------------------------------


@attrs.frozen
class Resume:
    """Run the workflow of every open PR (again: finished steps are journaled)."""


class Orchestrator(runtime.Actor[None]):
    """Runs the topology's workflow ``pr`` for every open PR, ``parallel`` at
    once, each as the run ``pr-<number>``; logs a report and stops when every
    PR has an outcome. Restarted or run again, it starts the same runs: the
    steps their journals have are not run again.
    """

    def __init__(self, *, source: str, parallel: int = 4) -> None:
        self.source = self.ctx.ref(source)
        self.parallel = trio.CapacityLimiter(int(parallel))
        self.outcomes: dict[int, str] = {}

    async def on_start(self) -> None:
        self.ctx.self_ref.tell_nowait(Resume())

    @runtime.handler
    async def resume(self, msg: Resume) -> None:
        prs = await self.source.ask(ListPullRequests())
        self.ctx.set_progress(total=len(prs), done=0)
        async with trio.open_nursery() as nursery:
            for pr in prs:
                nursery.start_soon(self._run, pr)
        by_outcome: dict[str, list[int]] = {}
        for number in sorted(self.outcomes):
            by_outcome.setdefault(self.outcomes[number], []).append(number)
        log.info("pr_review_report", **by_outcome)
        self.ctx.stop()

    async def _run(self, pr: PullRequest) -> None:
        async with self.parallel:
            result = await self.ctx.system.run_workflow(
                "pr", inputs={"pr": pr}, run_id=f"pr-{pr.number}"
            )
        outcome = result.steps["release"].value if result.status == "succeeded" else "failed"
        self.outcomes[pr.number] = outcome
        self.ctx.set_progress(done=len(self.outcomes))
        log.info("pr_finished", pr=pr.number, outcome=outcome, resumed=list(result.resumed))
