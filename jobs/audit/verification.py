"""1:1 verification metrics on scored pairs: k-fold accuracy (the LFW protocol), AUC, TMR (1 - FNMR) at an FMR.

Pure numpy. Pairs whose images had no detected face are not dropped: they are passed in as `failed` and
count as errors (a genuine pair rejected, an impostor pair accepted) at every threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FoldResult:
    threshold: float
    accuracy: float


def _accuracy_at(scores: np.ndarray, genuine: np.ndarray, failed: np.ndarray, threshold: float) -> float:
    correct = np.where(genuine, scores >= threshold, scores < threshold) & ~failed
    return float(correct.mean()) if len(scores) else float("nan")


def best_threshold(scores: np.ndarray, genuine: np.ndarray, failed: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs (midpoints between sorted usable scores)."""
    usable = np.sort(scores[~failed])
    if usable.size == 0:
        return 0.0
    candidates = np.concatenate([[usable[0] - 1e-6], (usable[:-1] + usable[1:]) / 2, [usable[-1] + 1e-6]])
    order = np.argsort(scores, kind="stable")
    # Accuracy for every candidate at once: genuine pairs above, impostor pairs below the threshold.
    sorted_scores, sorted_genuine, sorted_ok = scores[order], genuine[order], ~failed[order]
    positions = np.searchsorted(sorted_scores, candidates, side="left")
    genuine_ok = np.concatenate([[0], np.cumsum(sorted_genuine & sorted_ok)])
    impostor_ok = np.concatenate([[0], np.cumsum(~sorted_genuine & sorted_ok)])
    correct = (genuine_ok[-1] - genuine_ok[positions]) + impostor_ok[positions]
    return float(candidates[int(np.argmax(correct))])


def k_fold_accuracy(scores: np.ndarray, genuine: np.ndarray, failed: np.ndarray, folds: np.ndarray) -> list[FoldResult]:
    """For each fold: threshold chosen on all other folds, accuracy measured on this one."""
    results = []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        threshold = best_threshold(scores[train], genuine[train], failed[train])
        results.append(FoldResult(threshold, _accuracy_at(scores[test], genuine[test], failed[test], threshold)))
    return results


def worst_case_scores(scores: np.ndarray, genuine: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """Scores with failed pairs moved to where they hurt most: genuine to -inf, impostor to +inf."""
    adjusted = scores.astype(np.float64).copy()
    adjusted[failed & genuine] = -np.inf
    adjusted[failed & ~genuine] = np.inf
    return adjusted


def roc_auc(scores: np.ndarray, genuine: np.ndarray) -> float:
    """Area under the ROC curve: P(genuine score > impostor score), ties counting half."""
    impostors = np.sort(scores[~genuine])
    genuines = scores[genuine]
    if genuines.size == 0 or impostors.size == 0:
        return float("nan")
    below = np.searchsorted(impostors, genuines, side="left")
    tied = np.searchsorted(impostors, genuines, side="right") - below
    return float((below + 0.5 * tied).sum() / (genuines.size * impostors.size))


def tmr_at_fmr(scores: np.ndarray, genuine: np.ndarray, fmr: float) -> tuple[float, float]:
    """(TMR, threshold): the lowest threshold whose false match rate (impostor score >= t) is <= `fmr`."""
    impostors = np.sort(scores[~genuine])[::-1]
    allowed = int(np.floor(fmr * len(impostors)))
    # Accepting `allowed` impostors at most: the threshold sits just above the next impostor score.
    threshold = float(np.nextafter(impostors[allowed], np.inf)) if allowed < len(impostors) else float(impostors[-1])
    return float((scores[genuine] >= threshold).mean()), threshold
