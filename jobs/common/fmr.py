"""Threshold arithmetic at a false-match rate, one home for the audit, the calibration and fair score
normalization (numpy only)."""

from __future__ import annotations

import numpy as np


def threshold_at_fmr(impostor: np.ndarray, target_fmr: float) -> float:
    """The lowest threshold whose FMR is <= target: just above the (floor(target * n) + 1)-th highest impostor.

    With fewer than 1 / target impostors no false match is allowed, and the threshold sits just above the
    highest impostor score: the FMR it gives is then unmeasured (see `fmr_resolvable`).
    """
    scores = np.sort(np.asarray(impostor, np.float64))[::-1]
    allowed = int(np.floor(target_fmr * len(scores) + 1e-9))
    if allowed >= len(scores):
        return float(scores[-1])
    return float(np.nextafter(scores[allowed], np.inf))


def fmr_resolvable(impostor_count: int, target_fmr: float) -> bool:
    """Whether `impostor_count` scores can show an FMR as small as the target (at least one false match)."""
    return impostor_count * target_fmr >= 1


def worst_group_threshold(
    impostor: np.ndarray, groups: np.ndarray, target_fmr: float
) -> tuple[float, str | None, dict[str, float], list[str]]:
    """The lowest threshold at which every group's FMR among its own impostor pairs is at most the target:
    the highest of the groups' own thresholds. Returns (threshold, the group that sets it, each group's
    FMR at that threshold, the groups left out because too few pairs could show the target).

    A threshold calibrated over all impostor pairs is mostly set by pairs of people from different
    groups, who rarely look alike; demographically matched impostors are the ones a search meets.

    >>> scores = np.array([0.1, 0.2, 0.3, 0.9, 0.1, 0.2, 0.5, 0.6])
    >>> groups = np.array(["a"] * 4 + ["b"] * 4)
    >>> t, worst, rates, unresolved = worst_group_threshold(scores, groups, 0.25)
    >>> round(t, 3), worst, rates, unresolved
    (0.5, 'b', {'a': 0.25, 'b': 0.25}, [])
    """
    impostor, groups = np.asarray(impostor, np.float64), np.asarray(groups, dtype=object)
    thresholds: dict[str, float] = {}
    unresolved: list[str] = []
    for group in sorted(set(groups.tolist())):
        members = impostor[groups == group]
        if fmr_resolvable(len(members), target_fmr):
            thresholds[group] = threshold_at_fmr(members, target_fmr)
        else:
            unresolved.append(group)
    if not thresholds:
        return threshold_at_fmr(impostor, target_fmr), None, {}, unresolved
    worst = max(thresholds, key=lambda group: thresholds[group])
    threshold = thresholds[worst]
    rates = {group: float((impostor[groups == group] >= threshold).mean()) for group in thresholds}
    return threshold, worst, rates, unresolved
