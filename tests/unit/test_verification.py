import numpy as np
import pytest

from jobs.audit.verification import best_threshold, k_fold_accuracy, roc_auc, tmr_at_fmr, worst_case_scores


def test_best_threshold_separates_hand_made_scores() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.75])
    genuine = np.array([True, True, True, False, False, False])
    failed = np.zeros(6, dtype=bool)
    threshold = best_threshold(scores, genuine, failed)
    # The impostor at 0.75 sits between genuine 0.7 and 0.8: best is 5/6 correct, either side of it.
    correct = (np.where(genuine, scores >= threshold, scores < threshold)).sum()
    assert correct == 5


def test_failed_pairs_count_as_errors_at_any_threshold() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.9, 0.1])
    genuine = np.array([True, False, True, False, True, False])
    failed = np.array([False, False, False, False, True, True])
    folds = np.array([0, 0, 1, 1, 2, 2])
    results = k_fold_accuracy(scores, genuine, failed, folds)
    assert [r.accuracy for r in results] == [1.0, 1.0, 0.0]


def test_k_fold_threshold_comes_from_other_folds() -> None:
    scores = np.array([0.6, 0.5, 0.9, 0.2])
    genuine = np.array([True, False, True, False])
    folds = np.array([0, 0, 1, 1])
    results = k_fold_accuracy(scores, genuine, np.zeros(4, bool), folds)
    assert 0.2 < results[0].threshold <= 0.9  # learnt on fold 1 only
    assert 0.5 < results[1].threshold <= 0.6  # learnt on fold 0 only


def test_auc_matches_pair_counting() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=200), 1)  # rounding makes ties
    genuine = rng.random(200) < 0.4
    pos, neg = scores[genuine], scores[~genuine]
    expected = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        pos.size * neg.size
    )
    assert roc_auc(scores, genuine) == pytest.approx(expected)


def test_tmr_at_fmr_hand_computed() -> None:
    impostors = np.linspace(0, 0.99, 100)  # 100 impostors: FMR 0.01 allows exactly one above threshold
    genuine_scores = np.array([0.985, 0.99, 1.0, 0.5])
    scores = np.concatenate([genuine_scores, impostors])
    genuine = np.concatenate([np.ones(4, bool), np.zeros(100, bool)])
    tar, threshold = tmr_at_fmr(scores, genuine, 0.01)
    assert (impostors >= threshold).sum() == 1
    # One impostor (0.99) may pass, so the threshold sits just above the next one (0.98):
    # genuine 0.985, 0.99 and 1.0 pass, 0.5 does not.
    assert 0.98 < threshold <= 0.985
    assert tar == 0.75


def test_worst_case_scores() -> None:
    scores = np.array([0.5, 0.5])
    adjusted = worst_case_scores(scores, np.array([True, False]), np.array([True, True]))
    assert adjusted[0] == -np.inf and adjusted[1] == np.inf
