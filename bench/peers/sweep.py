"""How both sides of the peer benchmark are measured, so neither gets a kinder rule: recall@10 against
the exact truth, the lowest search setting that reaches a floor, queries per second at a setting, the
process's peak memory. numpy and the standard library only (it runs in both virtualenvs)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

K = 10
log = logging.getLogger(__name__)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true top-k (probes x k positions) found among the returned top-k, over all probes.

    >>> recall_at_k(np.array([[1, 2], [3, -1]]), np.array([[2, 1], [3, 4]]))
    0.75
    """
    hits = (found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
    return float(hits.any(axis=1).sum() / (truth >= 0).sum())


def lowest_setting(
    recall_of: Callable[[int], float],
    candidates: Sequence[int],
    floor: float,
    tried: dict[int, float] | None = None,
) -> tuple[int | None, float, list[tuple[int, float]]]:
    """The lowest setting (cheaper when lower: nprobe, efSearch) whose recall reaches `floor`: the
    candidates in order, then bisection between the last short of it and the first past it down to a
    step of 1/8 of the lower one. (setting, its recall, every (setting, recall) tried); setting None when
    no candidate reaches the floor. `tried` (filled in) carries what one floor's search measured to the next.

    >>> lowest_setting(lambda v: min(1.0, v / 100), [16, 32, 64, 128], 0.95)[:2]
    (96, 0.96)
    """
    tried = {} if tried is None else tried

    def reaches(value: int) -> bool:
        if value not in tried:  # a setting measured for an earlier floor is not measured again
            tried[value] = recall_of(value)
            log.info("setting %d: recall@%d %.4f", value, K, tried[value])
        return tried[value] >= floor

    below = None
    for value in candidates:
        if reaches(value):
            while below is not None and value - below > max(1, below // 8):
                middle = (below + value) // 2
                below, value = (below, middle) if reaches(middle) else (middle, value)
            return value, tried[value], sorted(tried.items())
        below = value
    return None, max(tried.values(), default=0.0), sorted(tried.items())


def queries_per_s(search: Callable[[np.ndarray], np.ndarray], probes: np.ndarray, repeats: int = 2) -> float:
    """Probes per second of `search` over every probe, the best of `repeats` passes (a pass is seconds
    long, so the best is the run least disturbed by the rest of the machine)."""
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        search(probes)
        best = min(best, time.perf_counter() - started)
    return len(probes) / best


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM of a process (this one by default), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
