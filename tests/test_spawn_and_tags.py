"""Spawning under any supervisor (``parent=``) and finding actors by tag."""

from __future__ import annotations

import attrs
import pytest
import trio

import runtime
from runtime import ChildSpec, PoolSpec, ResourceSpec, SupervisorSpec, Topology, open_system
from runtime.errors import ActorNotFound

GUARD = 60.0


@attrs.frozen
class Find:
    tag: str


@attrs.frozen
class Hello:
    pass


class Finder(runtime.Actor[None]):
    @runtime.handler
    async def find(self, msg: Find) -> list[str]:
        return [ref.path for ref in self.ctx.find(msg.tag)]

    @runtime.handler
    async def hello(self, msg: Hello) -> str:
        return self.ctx.path


def topology() -> Topology:
    return Topology(
        resources={"echo": ResourceSpec(kind="tests.resource_kinds:Echo")},
        supervisor=SupervisorSpec(
            name="root",
            children=[
                SupervisorSpec(
                    name="workers",
                    children=[ChildSpec(name="a", actor=Finder, tags=("review", "fast"))],
                ),
                ChildSpec(name="reviewers", actor=Finder, pool=PoolSpec(3), tags=("review",)),
                ChildSpec(name="finder", actor=Finder),
            ],
        ),
    )


async def test_spawn_under_a_nested_supervisor(autojump_clock: trio.abc.Clock) -> None:
    """``parent=`` adds the actor under that supervisor, at its path; a
    ``pool`` field spawns a pool and returns its routing ref."""
    with trio.fail_after(GUARD):
        async with open_system(topology()) as system:
            ref = await system.spawn(Finder, name="b", parent="root/workers")
            assert ref.path == "root/workers/b"
            assert await ref.ask(Hello()) == "root/workers/b"
            workers = system.tree().children[0]
            assert [child.path for child in workers.children] == [
                "root/workers/a",
                "root/workers/b",
            ]
            pool = await system.spawn(Finder, name="extra", parent="root/workers", pool={"size": 2})
            assert pool.path == "root/workers/extra"
            assert {await pool.ask(Hello()) for _ in range(2)} == {
                "root/workers/extra/0",
                "root/workers/extra/1",
            }
            assert system.ref("root/workers/extra") == pool


async def test_spawn_refuses_a_parent_that_is_not_a_supervisor(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An actor, a pool, the resources' supervisor and a path with nothing
    at it are each refused with a message saying what the path is."""
    with trio.fail_after(GUARD):
        async with open_system(topology()) as system:
            with pytest.raises(ValueError, match="that is an actor, not a supervisor"):
                await system.spawn(Finder, name="x", parent="root/finder")
            with pytest.raises(ValueError, match=r"that is a pool; .*system.resize"):
                await system.spawn(Finder, name="x", parent="root/reviewers")
            with pytest.raises(ValueError, match="resources' supervisor"):
                await system.spawn(Finder, name="x", parent="resources")
            with pytest.raises(ActorNotFound, match="no supervisor at that path; supervisors:"):
                await system.spawn(Finder, name="x", parent="root/nowhere")
            assert len(system.tree().children[0].children) == 1  # nothing was added


async def test_find_by_tag_from_the_system_and_from_an_actor(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``find`` returns the tagged actors and pools (a pool as its ref, not
    its workers), in the order they were made; a spawned actor with the tag
    is found, and one stopped for good is not. ``ctx.find`` is the same."""
    with trio.fail_after(GUARD):
        async with open_system(topology()) as system:
            found = system.find("review")
            assert [ref.path for ref in found] == ["root/workers/a", "root/reviewers"]
            assert found[1] == system.ref("root/reviewers")
            assert [ref.path for ref in system.find("fast")] == ["root/workers/a"]
            assert system.find("nothing") == []
            await system.spawn(Finder, name="late", parent="root/workers", tags=["review"])
            finder = system.ref("root/finder")
            assert await finder.ask(Find("review")) == [
                "root/workers/a",
                "root/reviewers",
                "root/workers/late",
            ]
            await system.stop("root/workers/a")
            await system.stop("root/reviewers")
            assert await finder.ask(Find("review")) == ["root/workers/late"]
            assert system.find("fast") == []
