"""Per probe, its candidates' subjects ranked (the identities table's rows), computed where the candidates
are: in the search task, from arrays, so the job needs no shuffle to group a probe's candidates again.

A probe's list is per gallery subject: its best raw and normalized score, the face at its best rank, how many
of the probe's candidates it holds; subjects ranked by their best normalized score where the run normalizes
(else the raw one), ties to the smaller subject_id. Candidates without a subject are left out.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.common.schema import IDENTITIES_ARROW, MATCHES_ARROW

# One candidate of a probe, in rank order: the matches table's candidate columns, typed there.
CANDIDATE_ARROW = pa.struct(
    [
        MATCHES_ARROW.field(name)
        for name in ("rank", "gallery_face_id", "gallery_subject_id", "score", "normalized_score")
    ]
)
# One ranked subject of a probe: the identities table's per-subject columns, typed there.
SUBJECT_ARROW = pa.struct(
    [
        IDENTITIES_ARROW.field(name)
        for name in (
            "rank",
            "gallery_subject_id",
            "best_score",
            "best_normalized_score",
            "best_gallery_face_id",
            "candidate_faces",
        )
    ]
)


def rank_subjects(candidates: pa.ListArray) -> pa.ListArray:
    """Each probe's candidate list (CANDIDATE_ARROW items, in rank order) -> its ranked subjects (SUBJECT_ARROW).

    >>> lists = pa.array(
    ...     [[(1, 7, "b", 0.9, None), (2, 3, "a", 0.8, None), (3, 5, "b", 0.7, None), (4, 9, None, 0.6, None)], []],
    ...     pa.list_(CANDIDATE_ARROW),
    ... )
    >>> [[(s["rank"], s["gallery_subject_id"], s["best_gallery_face_id"], s["candidate_faces"]) for s in probe]
    ...  for probe in rank_subjects(lists).to_pylist()]
    [[(1, 'b', 7, 2), (2, 'a', 3, 1)], []]
    """
    probes = len(candidates)
    items = candidates.flatten()  # the list array's own offsets: no nulls among the lists themselves
    lengths = pc.list_value_length(candidates).fill_null(0).to_numpy(zero_copy_only=False)
    probe_of = np.repeat(np.arange(probes), lengths)
    subjects = items.field("gallery_subject_id")
    known = subjects.is_valid().to_numpy(zero_copy_only=False)
    if not known.any():
        return pa.ListArray.from_arrays(pa.array(np.zeros(probes + 1, np.int32)), pa.array([], SUBJECT_ARROW))
    encoded = subjects.filter(pa.array(known)).dictionary_encode()
    # codes into the subjects sorted, so that ties go to the smaller subject_id
    by_name = pc.sort_indices(encoded.dictionary)
    names = pc.take(encoded.dictionary, by_name)
    code_rank = np.empty(len(names), np.int64)
    code_rank[by_name.to_numpy()] = np.arange(len(names))
    code = code_rank[encoded.indices.to_numpy(zero_copy_only=False)]
    probe = probe_of[known]
    rank = items.field("rank").to_numpy(zero_copy_only=False)[known]
    face = items.field("gallery_face_id").to_numpy(zero_copy_only=False)[known]
    score = _floats(items.field("score"))[known]
    normalized_column = items.field("normalized_score")
    normalizes = normalized_column.null_count < len(normalized_column)
    normalized = _floats(normalized_column)[known] if normalizes else None

    order = np.lexsort((rank, code, probe))  # by probe, then subject, best rank first
    probe, code, rank, face, score = probe[order], code[order], rank[order], face[order], score[order]
    new_group = np.ones(len(order), bool)
    new_group[1:] = (probe[1:] != probe[:-1]) | (code[1:] != code[:-1])
    starts = np.flatnonzero(new_group)
    best_score = np.maximum.reduceat(score, starts)
    best_normalized = np.maximum.reduceat(normalized[order], starts) if normalized is not None else None
    judged = best_normalized if best_normalized is not None else best_score
    group_probe, group_code = probe[starts], code[starts]
    group_faces = np.diff(np.append(starts, len(order))).astype(np.int32)

    ranked = np.lexsort((group_code, -judged, group_probe))  # by probe, best subject first
    per_probe = np.bincount(group_probe, minlength=probes)
    offsets = np.concatenate([[0], np.cumsum(per_probe)]).astype(np.int32)
    subject_rank = np.arange(len(ranked)) - np.repeat(offsets[:-1], per_probe) + 1
    items_out = pa.StructArray.from_arrays(
        [
            pa.array(subject_rank, pa.int32()),
            pc.take(names, pa.array(group_code[ranked])),
            pa.array(best_score[ranked], pa.float32()),
            pa.array(best_normalized[ranked], pa.float32())
            if best_normalized is not None
            else pa.nulls(len(ranked), pa.float32()),
            pa.array(face[starts][ranked], pa.int64()),
            pa.array(group_faces[ranked], pa.int32()),
        ],
        fields=list(SUBJECT_ARROW),
    )
    return pa.ListArray.from_arrays(pa.array(offsets), items_out)


def _floats(column: pa.Array) -> np.ndarray:
    """A float column as float64 (nulls as -inf: never a subject's best)."""
    return column.fill_null(-np.inf).to_numpy(zero_copy_only=False).astype(np.float64)
