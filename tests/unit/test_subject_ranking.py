"""rank_subjects (the identities rows the search tasks compute) against a row-by-row reading of its rule."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from jobs.query.ranking import CANDIDATE_ARROW, rank_subjects


def reference(candidates: list[dict], normalizes: bool) -> list[tuple]:
    """One probe's subjects the slow way: group its candidates, best scores, face at the best rank, ranked."""
    groups: dict[str, list[dict]] = {}
    for candidate in sorted(candidates, key=lambda c: c["rank"]):
        if candidate["gallery_subject_id"] is not None:
            groups.setdefault(candidate["gallery_subject_id"], []).append(candidate)
    rows = []
    for subject, members in groups.items():
        best = max(m["score"] for m in members)
        best_normalized = max(m["normalized_score"] for m in members) if normalizes else None
        rows.append((subject, best, best_normalized, members[0]["gallery_face_id"], len(members)))
    rows.sort(key=lambda r: (-(r[2] if normalizes else r[1]), r[0]))
    return [(rank, *row) for rank, row in enumerate(rows, 1)]


@pytest.mark.parametrize("normalizes", [False, True])
def test_rank_subjects_matches_the_rule_on_random_lists(normalizes: bool) -> None:
    rng = np.random.default_rng(7)
    probes = []
    for _ in range(300):
        k = int(rng.integers(0, 12))
        faces = rng.choice(1000, size=k, replace=False)
        # few subjects and coarse scores: shared subjects, tied best scores, missing subjects
        subjects = [None if rng.random() < 0.15 else f"s{int(rng.integers(0, 6))}" for _ in range(k)]
        scores = np.round(rng.random(k), 1).astype(np.float32)
        normalized = np.round(rng.random(k), 1).astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        probes.append(
            [
                {
                    "rank": rank,
                    "gallery_face_id": int(faces[i]),
                    "gallery_subject_id": subjects[i],
                    "score": float(scores[i]),
                    "normalized_score": float(normalized[i]) if normalizes else None,
                }
                for rank, i in enumerate(order, 1)
            ]
        )
    ranked = rank_subjects(pa.array(probes, pa.list_(CANDIDATE_ARROW))).to_pylist()
    assert len(ranked) == len(probes)
    for candidates, subjects in zip(probes, ranked, strict=True):
        got = [
            (
                s["rank"],
                s["gallery_subject_id"],
                s["best_score"],
                s["best_normalized_score"],
                s["best_gallery_face_id"],
                s["candidate_faces"],
            )
            for s in subjects
        ]
        assert got == reference(candidates, normalizes)


def test_no_subject_anywhere_gives_empty_lists() -> None:
    lists = pa.array([[(1, 4, None, 0.5, None)], []], pa.list_(CANDIDATE_ARROW))
    assert rank_subjects(lists).to_pylist() == [[], []]
