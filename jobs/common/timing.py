"""Named phases of a job, timed and logged to stderr as they start and end (with counts and rates where
a phase has them), so a long run is never silent; `timings_s` goes into every job's JSON summary."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("lineup.phases")


class Phases:
    """Seconds spent per phase; a phase entered twice (one per chunk, or from two threads at once)
    accumulates.

    >>> phases = Phases("demo")
    >>> with phases.phase("read"):
    ...     pass
    >>> list(phases.timings_s())
    ['read']
    """

    def __init__(self, job: str) -> None:
        self.job = job
        self._seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def phase(self, name: str, count: int | None = None, unit: str = "rows") -> Iterator[None]:
        """Time the block; `count` (known up front) adds a rate to the closing log line."""
        log.info("%s: %s%s ...", self.job, name, f" ({count} {unit})" if count is not None else "")
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.add(name, elapsed)
            rate = f", {count / elapsed:.1f} {unit}/s" if count and elapsed > 0 else ""
            log.info("%s: %s done in %.2f s%s", self.job, name, elapsed, rate)

    def add(self, name: str, seconds: float) -> None:
        """Account time measured elsewhere (e.g. the SparkSession start)."""
        with self._lock:
            self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def timings_s(self) -> dict[str, float]:
        return {name: round(seconds, 2) for name, seconds in self._seconds.items()}
