"""Histograms of handling times and checkpoint sizes, kept as plain counts.

The only metrics code that runs while messages are handled (on sampled
messages); the collector in ``_metrics`` reads them at scrape time.
"""

from __future__ import annotations

import bisect
import math

__all__ = ["DURATION_BUCKETS", "SAMPLE_EVERY", "SIZE_BUCKETS", "SLOW_HANDLER", "Durations"]

DURATION_BUCKETS = (
    0.0001,
    0.001,
    0.01,
    0.1,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
"""Handling-time buckets, in seconds: from 100 µs to 10 minutes (an agent's
handler waiting on an LLM takes seconds to minutes)."""

SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
"""Checkpoint size buckets, in bytes."""

SAMPLE_EVERY = 16
"""A handler measured faster than ``SLOW_HANDLER`` has only one message in
this many timed (each timed one counts for this many); slower ones have
every message timed."""

SLOW_HANDLER = 0.0001


class Durations:
    """A histogram of observations with fixed buckets, kept as plain counts.

    ``observe(value, weight)`` returns how many messages to let pass before
    the next observation: 1 after a slow one, ``SAMPLE_EVERY`` after a fast
    one (the caller counts down; each sampled fast observation has a weight
    of ``SAMPLE_EVERY``).
    """

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float, weight: int = 1) -> int:
        self.counts[bisect.bisect_left(self.buckets, value)] += weight
        self.sum += value * weight
        return 1 if value >= SLOW_HANDLER else SAMPLE_EVERY

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, cumulative count)`` pairs, ``+Inf`` last."""
        total = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*self.buckets, math.inf), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == math.inf else _bound(bound), total))
        return out


def _bound(value: float) -> str:
    return repr(float(value))
