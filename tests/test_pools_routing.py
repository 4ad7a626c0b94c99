"""The routing decisions of a pool, alone (``runtime._routing``): pure
functions of the workers' indexes and what the pool knows of them."""

from __future__ import annotations

from runtime._routing import key_hash, next_usable, rendezvous, score, worker_salt


def owners(keys: range, workers: int) -> list[int | None]:
    salts = [worker_salt(index) for index in range(workers)]
    return [rendezvous(key_hash(f"key-{key}"), salts, lambda _: True) for key in keys]


def test_key_hash_is_the_same_in_every_process() -> None:
    """Strings hash with BLAKE2b, not Python's per-process salted ``hash``:
    fixed values, so a key's worker does not change across restarts."""
    assert key_hash("repo-42") == key_hash("repo-42")
    assert key_hash("repo-42") == 0x991779E74CE95ACF
    assert key_hash(b"repo-42") == key_hash("repo-42")
    assert key_hash(7) != key_hash(8)
    assert key_hash(("a", 1)) == key_hash(("a", 1))


def test_rendezvous_spreads_keys_evenly() -> None:
    """20,000 keys over 5 workers: each worker owns 20% of them, within 1.5%."""
    counts = [0] * 5
    for owner in owners(range(20_000), 5):
        assert owner is not None
        counts[owner] += 1
    assert all(abs(count / 20_000 - 0.2) < 0.015 for count in counts), counts


def test_growing_moves_only_the_keys_the_new_worker_wins() -> None:
    """From n to n+1 workers a key moves only to the new worker, and the
    fraction that moves is the theoretical 1/(n+1) (within 1.5%)."""
    keys = range(20_000)
    for n in (1, 3, 4, 8):
        before, after = owners(keys, n), owners(keys, n + 1)
        moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
        assert {new for _, new in moved} == {n}
        assert abs(len(moved) / len(keys) - 1 / (n + 1)) < 0.015, (n, len(moved))


def test_shrinking_moves_only_the_removed_workers_keys() -> None:
    """From 5 to 4 workers only the keys of worker 4 move, spread over the rest."""
    keys = range(10_000)
    before, after = owners(keys, 5), owners(keys, 4)
    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert {old for old, _ in moved} == {4}
    assert len(moved) == before.count(4)
    assert {new for _, new in moved} == {0, 1, 2, 3}


def test_rendezvous_skips_an_unusable_worker_without_moving_other_keys() -> None:
    """A worker that cannot take a message: its keys go to their second
    choice; every other key stays where it was; none usable gives None."""
    salts = [worker_salt(index) for index in range(4)]
    hashes = [key_hash(key) for key in range(2_000)]
    usual = [rendezvous(h, salts, lambda _: True) for h in hashes]
    without_2 = [rendezvous(h, salts, lambda index: index != 2) for h in hashes]
    for first, second in zip(usual, without_2, strict=True):
        assert second != 2
        assert first in (2, second)
    assert rendezvous(hashes[0], salts, lambda _: False) is None
    best = max(range(4), key=lambda index: score(hashes[0], salts[index]))
    assert usual[0] == best


def test_next_usable_wraps_around() -> None:
    """The first usable worker from ``start`` on, wrapping; None when none is."""
    usable = {1, 3}.__contains__
    assert next_usable(4, 0, usable) == 1
    assert next_usable(4, 2, usable) == 3
    assert next_usable(4, 3, usable) == 3
    assert next_usable(4, 0, lambda _: False) is None
    assert next_usable(0, 0, usable) is None
