"""The one search implementation (FAISS + numpy, no Spark): a shard's top-k with removed ids skipped, and
the merge of several shards' lists into the global top-k. The index job's recall tuning, the query job's
executors and every benchmark call these, so a recall figure describes the code that serves queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MISSING_ID = -1  # an empty slot in a result list (fewer than k vectors, or removed ones)


def merge_top_k(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (queries x k_s) results into the global top-k by score (inner product: larger is
    better); missing entries (id -1) sort last. Ties are broken by smaller face_id, so results are stable.

    >>> scores = [np.array([[0.9, 0.5]]), np.array([[0.9, 0.7]])]
    >>> s, i = merge_top_k(scores, [np.array([[8, 3]]), np.array([[2, 5]])], 3)
    >>> s.tolist(), i.tolist()
    ([[0.9, 0.9, 0.7]], [[2, 8, 5]])
    """
    all_scores = np.concatenate(scores, axis=1)
    all_ids = np.concatenate(ids, axis=1)
    masked = np.where(all_ids < 0, -np.inf, all_scores)
    order = np.lexsort((all_ids, -masked), axis=1)[:, :k]
    return np.take_along_axis(masked, order, axis=1), np.take_along_axis(all_ids, order, axis=1)


def search_shard(shard: Any, removed: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) of one shard, scores as cosines; removed ids become -1. The shard is asked for
    extra candidates (up to 4k) so that removed ids rarely leave a list short."""
    if shard.ntotal == 0 or len(queries) == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    import faiss

    extra = min(len(removed), 4 * k)
    scores, ids = shard.search(np.ascontiguousarray(queries, dtype=np.float32), min(k + extra, shard.ntotal))
    if shard.metric_type == faiss.METRIC_L2:  # a fast-scan index over unit vectors: |q - x|^2 = 2 - 2 cos
        scores = np.where(ids >= 0, np.float32(1) - scores / np.float32(2), -np.inf).astype(np.float32)
    if len(removed):
        ids = np.where(np.isin(ids, removed), MISSING_ID, ids)
    return scores, ids


def search_shards(shards: Sequence, removed: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The global top-k over every shard (at most k columns; fewer when the shards hold fewer vectors)."""
    found = [search_shard(shard, removed, queries, k) for shard in shards]
    found = [pair for pair in found if pair[1].shape[1]]
    if not found:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    return merge_top_k([f[0] for f in found], [f[1] for f in found], k)


def pad_to_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exactly k columns: missing slots get score -inf and id -1."""
    pad = k - ids.shape[1]
    if pad <= 0:
        return scores, ids
    return (
        np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf),
        np.pad(ids, ((0, 0), (0, pad)), constant_values=MISSING_ID),
    )
