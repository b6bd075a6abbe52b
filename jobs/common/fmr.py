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
