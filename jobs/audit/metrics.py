"""Verification (1:1) error rates from genuine and impostor score sets (numpy only).

Convention (ISO/IEC 19795-1): a comparison matches when score >= threshold. FMR(t) is the share of
impostor scores >= t, FNMR(t) the share of genuine scores < t. Every rate travels with the number of
scores it was measured on, because a rate below 1 / impostor count cannot be measured at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from jobs.common.fmr import fmr_resolvable, threshold_at_fmr


def fmr_fnmr(genuine: np.ndarray, impostor: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FMR and FNMR at each threshold (exact counts via sorted scores, O((n + t) log n))."""
    genuine, impostor = np.sort(np.asarray(genuine, np.float64)), np.sort(np.asarray(impostor, np.float64))
    thresholds = np.asarray(thresholds, np.float64)
    false_matches = len(impostor) - np.searchsorted(impostor, thresholds, side="left")
    false_non_matches = np.searchsorted(genuine, thresholds, side="left")
    fmr = false_matches / max(len(impostor), 1)
    fnmr = false_non_matches / max(len(genuine), 1)
    return fmr, fnmr


def det_curve(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FMR, FNMR) at every distinct score, thresholds descending (as sklearn's roc_curve)."""
    thresholds = np.unique(np.concatenate([genuine, impostor]).astype(np.float64))[::-1]
    fmr, fnmr = fmr_fnmr(genuine, impostor, thresholds)
    return thresholds, fmr, fnmr


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where FMR and FNMR cross; the mean of the two at the closest distinct threshold."""
    thresholds, fmr, fnmr = det_curve(genuine, impostor)
    best = int(np.argmin(np.abs(fmr - fnmr)))
    return float((fmr[best] + fnmr[best]) / 2), float(thresholds[best])


@dataclass(frozen=True)
class OperatingPoint:
    target_fmr: float
    threshold: float
    fmr: float
    fnmr: float | None  # None without genuine pairs (e.g. UTKFace has no identity labels)
    false_matches: int
    impostor_pairs: int
    false_non_matches: int
    genuine_pairs: int
    resolvable: bool

    def as_dict(self) -> dict:
        return asdict(self)


def operating_point(genuine: np.ndarray, impostor: np.ndarray, target_fmr: float) -> OperatingPoint:
    return point_at(genuine, impostor, threshold_at_fmr(impostor, target_fmr), target_fmr)


def point_at(genuine: np.ndarray, impostor: np.ndarray, threshold: float, target_fmr: float) -> OperatingPoint:
    """The rates at a given threshold (one chosen for `target_fmr` by some rule)."""
    fmr, fnmr = fmr_fnmr(genuine, impostor, np.array([threshold]))
    return OperatingPoint(
        target_fmr=target_fmr,
        threshold=threshold,
        fmr=float(fmr[0]),
        fnmr=float(fnmr[0]) if len(genuine) else None,
        false_matches=int(round(fmr[0] * len(impostor))),
        impostor_pairs=len(impostor),
        false_non_matches=int(round(fnmr[0] * len(genuine))),
        genuine_pairs=len(genuine),
        resolvable=fmr_resolvable(len(impostor), target_fmr),
    )


def bootstrap_rates(
    genuine: np.ndarray, impostor: np.ndarray, threshold: float, rounds: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float | None]:
    """Percentile bootstrap intervals of FMR and FNMR at a fixed threshold.

    Genuine and impostor scores are resampled independently as counts (binomial draws of the observed
    rates), which is what resampling the scores does at a fixed threshold, without materialising them.
    Pairs that share a person are not independent, so these intervals are, if anything, too narrow.
    When no error was observed the interval is [0, 0]; `fmr_upper_rule_of_three` (3 / n) then bounds it.
    """
    rng = np.random.default_rng(seed)
    fmr, fnmr = fmr_fnmr(genuine, impostor, np.array([threshold]))
    low, high = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out: dict[str, float | None] = {}
    for name, rate, n in (("fmr", fmr[0], len(impostor)), ("fnmr", fnmr[0], len(genuine))):
        if n == 0:
            out.update({f"{name}_ci_low": None, f"{name}_ci_high": None})
            continue
        draws = rng.binomial(n, rate, size=rounds) / n
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = (float(v) for v in np.percentile(draws, [low, high]))
    out["fmr_upper_rule_of_three"] = 3 / len(impostor) if len(impostor) else None
    return out


def ratio_max_min(rates: dict[str, float | None]) -> tuple[float | None, str]:
    """max/min of per-group rates; None with the reason when the smallest is zero (the ratio is unbounded)."""
    values = {group: rate for group, rate in rates.items() if rate is not None}
    if len(values) < 2:
        return None, "fewer than two groups with a measured rate"
    high = max(values, key=lambda group: values[group])
    low = min(values, key=lambda group: values[group])
    if values[low] == 0:
        return None, f"group {low} had no errors: the ratio is unbounded (see its rule-of-three upper bound)"
    return values[high] / values[low], f"{high} / {low}"
