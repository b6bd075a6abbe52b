"""Audit metrics against hand-computed values and against scikit-learn's roc_curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.audit import identification as ident
from jobs.audit.metrics import (
    bootstrap_rates,
    det_curve,
    equal_error_rate,
    fmr_fnmr,
    fmr_resolvable,
    operating_point,
    ratio_max_min,
    threshold_at_fmr,
)
from jobs.audit.pairs import build_pairs, subject_codes

GENUINE = np.array([0.9, 0.8, 0.7, 0.6])
IMPOSTOR = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.65, 0.75, 0.85, 0.2, 0.3])


def test_rates_by_hand() -> None:
    fmr, fnmr = fmr_fnmr(GENUINE, IMPOSTOR, np.array([0.7, 0.65, 0.95, 0.0]))
    # t=0.7: impostors >= 0.7 are 0.75, 0.85 (2 of 10); genuine < 0.7 is 0.6 (1 of 4)
    assert fmr.tolist() == [0.2, 0.3, 0.0, 1.0]
    assert fnmr.tolist() == [0.25, 0.25, 1.0, 0.0]


def test_threshold_at_fmr_by_hand() -> None:
    # FMR <= 0.1 allows one false match of ten: just above the second-highest impostor (0.75)
    t = threshold_at_fmr(IMPOSTOR, 0.1)
    assert 0.75 < t < 0.7500001
    assert fmr_fnmr(GENUINE, IMPOSTOR, np.array([t]))[0][0] == 0.1
    # FMR <= 0.05 allows none: just above the highest impostor
    assert 0.85 < threshold_at_fmr(IMPOSTOR, 0.05) < 0.8500001
    assert not fmr_resolvable(10, 0.05) and fmr_resolvable(10, 0.1)
    point = operating_point(GENUINE, IMPOSTOR, 0.1)
    assert (point.false_matches, point.fnmr, point.resolvable) == (1, 0.5, True)  # 0.7 and 0.6 are below 0.75+


def test_equal_error_rate_by_hand() -> None:
    eer, t = equal_error_rate(GENUINE, IMPOSTOR)
    # at t=0.7: FMR 0.2, FNMR 0.25 -> closest crossing among distinct scores; mean 0.225
    assert t == 0.7 and eer == pytest.approx(0.225)


def test_det_curve_matches_sklearn_roc_curve() -> None:
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(7)
    genuine = rng.normal(0.7, 0.1, 3000).round(3)  # rounded: ties, as real float32 scores have
    impostor = rng.normal(0.3, 0.15, 20000).round(3)
    labels = np.r_[np.ones(len(genuine)), np.zeros(len(impostor))]
    fpr, tpr, thresholds = roc_curve(labels, np.r_[genuine, impostor], drop_intermediate=False)
    fmr, fnmr = fmr_fnmr(genuine, impostor, thresholds[1:])  # sklearn's first threshold is +inf
    np.testing.assert_array_equal(fmr, fpr[1:])
    np.testing.assert_allclose(fnmr, 1 - tpr[1:], atol=1e-12)
    ours, det_fmr, det_fnmr = det_curve(genuine, impostor)
    np.testing.assert_array_equal(ours, thresholds[1:])
    np.testing.assert_array_equal(det_fmr, fpr[1:])


def test_bootstrap_interval_covers_the_rate_and_zero_errors_get_rule_of_three() -> None:
    rng = np.random.default_rng(1)
    impostor = rng.normal(0.3, 0.1, 10000)
    ci = bootstrap_rates(np.array([0.9]), impostor, 0.5, rounds=500, seed=0)
    fmr = float((impostor >= 0.5).mean())
    assert ci["fmr_ci_low"] < fmr < ci["fmr_ci_high"] and ci["fmr_ci_high"] - ci["fmr_ci_low"] < 0.02
    none = bootstrap_rates(np.array([0.9]), impostor, 2.0, rounds=100)
    assert none["fmr_ci_low"] == none["fmr_ci_high"] == 0 and none["fmr_upper_rule_of_three"] == 3 / 10000


def test_ratio_is_not_invented_when_a_group_has_no_errors() -> None:
    assert ratio_max_min({"a": 0.002, "b": 0.0005})[0] == pytest.approx(4.0)
    ratio, note = ratio_max_min({"a": 0.002, "b": 0.0})
    assert ratio is None and "unbounded" in note


def test_pairs_all_and_within_blocks() -> None:
    codes = subject_codes(["x", "x", "y", None, None])  # the two unlabelled faces are two people
    assert len(set(codes.tolist())) == 4
    pairs = build_pairs(codes, np.zeros(5, np.int64), genuine_max=10, impostor_max=100, seed=0)
    assert pairs.counts == {"genuine_pairs": 1, "impostor_pairs": 9}
    blocks = np.array([0, 0, 1, 1, 0])
    within = build_pairs(codes, blocks, genuine_max=10, impostor_max=100, seed=0)
    impostors = {(int(a), int(b)) for a, b, g in zip(within.a, within.b, within.genuine) if not g}
    assert impostors == {(0, 4), (1, 4), (2, 3)}
    sampled = build_pairs(np.arange(200), np.zeros(200, np.int64), genuine_max=10, impostor_max=500, seed=3)
    assert sampled.sampled_impostors and sampled.counts["impostor_pairs"] == 500
    assert len({(a, b) for a, b in zip(sampled.a.tolist(), sampled.b.tolist())}) == 500


def test_identification_rates_by_hand() -> None:
    rows = [
        # probe 1 (subject A, enrolled): A at rank 2 -> rank-1 miss, rank-5 hit
        (1, "A", 1, 11, "B", 0.9), (1, "A", 2, 12, "A", 0.8),
        # probe 2 (subject C, enrolled): C at rank 1
        (2, "C", 1, 21, "C", 0.95), (2, "C", 2, 22, "B", 0.7),
        # probe 3 and 4 (not enrolled): top scores 0.85 and 0.6
        (3, "Z", 1, 31, "B", 0.85), (3, "Z", 2, 32, "A", 0.5),
        (4, "Y", 1, 41, "A", 0.6), (4, "Y", 2, 42, "C", 0.55),
        # probe 5 has no subject_id: neither mated nor non-mated, so it is left out
        (5, None, 1, 51, "A", 0.99),
    ]  # fmt: skip
    frame = pd.DataFrame(
        rows, columns=["probe_face_id", "probe_subject_id", "rank", "gallery_face_id", "gallery_subject_id", "score"]
    )
    frame["probe_attributes"] = [{"g": "1"} if p in (3,) else {"g": "2"} for p in frame["probe_face_id"]]
    searches = ident.searches_from_matches(frame, enrolled={"A", "B", "C"})
    assert len(searches.table) == 4
    assert ident.rank_hit_rates(searches) == {"mated_searches": 2, "rank_1_hit_rate": 0.5}
    at = ident.fpir_fnir(searches, 0.82)
    # non-mated with a candidate >= 0.82: probe 3 only -> 1/2; mated whose subject is below 0.82: probe 1 (0.8)
    assert (at["fpir"], at["fnir"]) == (0.5, 0.5)
    # false candidates >= 0.82: probe 1's B (0.9), probe 3's B (0.85) -> 2 over 4 searches
    assert at["false_candidates_per_search"] == 0.5
    per_group = ident.per_group_fpir(searches, 0.82, ["g"]).set_index("group")
    assert per_group.loc["g=1", "fpir"] == 1.0 and per_group.loc["g=2", "fpir"] == 0.0
    point = ident.fnir_at_fpir(searches, 0.5)  # one of two non-mated may pass: just above 0.6
    assert 0.6 < point["threshold"] < 0.6000001 and point["fpir"] == 0.5
