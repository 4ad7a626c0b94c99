"""Timing helpers: repetitions after a warm-up, medians and percentiles."""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections.abc import Callable, Sequence

__all__ = ["Timer", "percentile", "repeat", "rss_bytes"]


def repeat(
    run: Callable[[], float], times: int, warmup: int = 1
) -> tuple[float, tuple[float, float]]:
    """Call ``run`` (which returns one figure) ``warmup`` + ``times`` times.

    Returns the median of the measured figures and their (min, max) spread.
    The collector runs between repetitions, never inside one.
    """
    for _ in range(warmup):
        run()
    figures = []
    for _ in range(times):
        gc.collect()
        figures.append(run())
    return statistics.median(figures), (min(figures), max(figures))


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize()


class Timer:
    """``with Timer() as t: ...`` then ``t.elapsed`` in seconds (perf_counter)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start
