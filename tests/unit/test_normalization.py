"""Fair score normalization on hand-made embeddings: offsets and scores computed by hand, records
validated, a record for another model refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.common.errors import UserError
from jobs.common.normalization import (
    Normalization,
    fsn_from_centres,
    learn_fsn,
    normalization_from_record,
    spherical_kmeans,
)
from jobs.common.thresholds import ThresholdSettings, resolve_threshold

# Two faces close together (cluster A, their impostor score 0.8) and two far apart (cluster B, 0.0);
# every face is a different person, and A and B are orthogonal.
FACES = np.array([[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
CENTRES = np.array([[1, 0, 0, 0], [0, 0, 0.7071068, 0.7071068]], np.float32)
PAIRS_A, PAIRS_B = np.triu_indices(4, k=1)


def scores_of(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", FACES[a], FACES[b])


def test_offsets_and_normalized_scores_match_a_hand_computation() -> None:
    # A target FMR below 1 / pairs allows no false match: each threshold sits just above the highest
    # impostor score it sees. Global: 0.8 (the A pair). Pairs touching A: 0.8. Pairs touching B: 0.0.
    fsn = fsn_from_centres(CENTRES, FACES, PAIRS_A, PAIRS_B, scores_of(PAIRS_A, PAIRS_B), 1e-9)
    assert fsn.global_threshold == pytest.approx(0.8, abs=1e-6)
    assert fsn.offsets == pytest.approx([0.0, -0.8], abs=1e-6)
    assert fsn.clusters_of(FACES).tolist() == [0, 0, 1, 1]
    offsets = fsn.offsets_of(FACES)
    normalized = fsn.normalize(scores_of(PAIRS_A, PAIRS_B), offsets[PAIRS_A], offsets[PAIRS_B])
    by_pair = dict(zip(zip(PAIRS_A.tolist(), PAIRS_B.tolist()), normalized.tolist()))
    assert by_pair[(0, 1)] == pytest.approx(0.8, abs=1e-6)  # A's pair: offset 0, unchanged
    assert by_pair[(2, 3)] == pytest.approx(0.8, abs=1e-6)  # B's pair: 0.0 + 0.8, now as close as A's
    assert by_pair[(0, 2)] == pytest.approx(0.4, abs=1e-6)  # across: 0.0 + (0 + 0.8) / 2
    assert by_pair[(1, 3)] == pytest.approx(0.4, abs=1e-6)


def test_spherical_kmeans_finds_separated_clusters_and_learn_fsn_uses_them() -> None:
    rng = np.random.default_rng(1)
    axes = np.eye(8, dtype=np.float32)[[0, 4]]
    vectors = np.repeat(axes, 50, axis=0) + 0.05 * rng.normal(size=(100, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    centres = spherical_kmeans(vectors, 2, seed=0)
    assert np.allclose(np.linalg.norm(centres, axis=1), 1, atol=1e-5)
    assert sorted(np.abs(centres @ axes.T).argmax(axis=1).tolist()) == [0, 1]
    a, b = np.triu_indices(100, k=1)
    fsn = learn_fsn(vectors, a, b, np.einsum("ij,ij->i", vectors[a], vectors[b]), 2, 1e-3, seed=0)
    assert len(fsn.offsets) == 2 and np.all(np.isfinite(fsn.offsets))


def test_record_round_trip_and_bad_records_are_refused() -> None:
    fsn = Normalization(CENTRES, np.array([0.0, -0.8]), 0.8, 1e-3)
    again = normalization_from_record(json.loads(json.dumps(fsn.as_record())), dimension=4)
    assert again.offsets.tolist() == [0.0, -0.8] and np.allclose(again.centres, CENTRES, atol=1e-6)
    with pytest.raises(ValueError, match="8-d"):
        normalization_from_record(fsn.as_record(), dimension=8)
    with pytest.raises(ValueError, match="incomplete"):
        normalization_from_record({"method": "fsn", "version": 1, "centres": [[1.0]]})
    with pytest.raises(ValueError, match="offsets"):
        normalization_from_record({**fsn.as_record(), "offsets": [0.0, 9.0]})


def write_record(folder: Path, model_id: str, normalization: dict) -> str:
    record = {
        "calibration_id": "cal-fsn",
        "threshold": 0.61,
        "raw_threshold": 0.6,
        "model_id": model_id,
        "target_fmr": 1e-3,
        "measured_fmr": 1e-3,
        "impostor_pairs": 6,
        "data": {"name": "hand-made"},
        "normalization": normalization,
    }
    (folder / "calibrations").mkdir(exist_ok=True)
    (folder / "calibrations" / "cal-fsn.json").write_text(json.dumps(record))
    return "cal-fsn"


def test_a_normalizing_calibration_of_another_model_is_refused(tmp_path: Path) -> None:
    fsn = Normalization(CENTRES, np.array([0.0, -0.8]), 0.8, 1e-3).as_record()
    reference = write_record(tmp_path, "model-a", fsn)
    chosen = resolve_threshold(ThresholdSettings(calibration=reference), "model-a", tmp_path, "query.threshold")
    assert chosen.normalization is not None and chosen.normalization_label == "fsn-v1:cal-fsn"
    assert "fsn-normalized scores" in chosen.describe()
    with pytest.raises(UserError, match="measured for model model-a, but this run uses model-b"):
        resolve_threshold(ThresholdSettings(calibration=reference), "model-b", tmp_path, "query.threshold")


def test_a_calibration_with_an_unknown_normalization_is_refused(tmp_path: Path) -> None:
    reference = write_record(tmp_path, "model-a", {"method": "zscore", "version": 1})
    with pytest.raises(UserError, match="query.threshold.calibration cal-fsn: normalization method 'zscore'"):
        resolve_threshold(ThresholdSettings(calibration=reference), "model-a", tmp_path, "query.threshold")


def test_rescoring_search_results_keeps_the_best_by_normalized_score() -> None:
    fsn = Normalization(CENTRES, np.array([0.0, -0.8]), 0.8, 1e-3)
    probe = FACES[[2]]  # cluster B: offset -0.8
    ids = np.array([[10, 20, 30, -1]])  # 10 in A, 20 and 30 in B; one empty slot
    scores = np.array([[0.5, 0.3, 0.3, -np.inf]], np.float32)
    gallery = (np.array([10, 20, 30]), np.array([0.0, -0.8, -0.8], np.float32))
    raw, kept, normalized = fsn.rescore_top(probe, scores, ids, gallery, 2)
    # 10: 0.5 + 0.4 = 0.9; 20 and 30: 0.3 + 0.8 = 1.1 (a tie: the smaller face_id first)
    assert kept.tolist() == [[20, 30]]
    assert raw[0].tolist() == pytest.approx([0.3, 0.3])
    assert normalized[0].tolist() == pytest.approx([1.1, 1.1], abs=1e-6)
    with pytest.raises(RuntimeError, match="gallery face 40 has no normalization offset"):
        fsn.rescore_top(probe, scores, np.array([[10, 40, 30, -1]]), gallery, 2)
