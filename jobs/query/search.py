"""Executor side of a query: search shards for a partition of probes (FAISS, no Spark).

Two plans. `all_shards`: a task searches every shard for its probes and merges them itself (shards are
loaded once per Python worker and reused by later tasks): one stage, no shuffle, while the whole index
fits a worker's memory. `per_shard`: a task gets (probe, shard) rows and searches only that shard, so a
worker holds one shard at a time; the driver's plan merges the shards' lists per probe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

CANDIDATES_DDL = "probe_face_id BIGINT, gallery_face_id BIGINT, score FLOAT, rank INT"


def search_shard(shard, removed: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) of one shard; removed ids are dropped, missing entries have id -1."""
    if shard.ntotal == 0 or len(queries) == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    extra = min(len(removed), 4 * k)
    scores, ids = shard.search(np.ascontiguousarray(queries, dtype=np.float32), min(k + extra, shard.ntotal))
    if len(removed):
        ids = np.where(np.isin(ids, removed), -1, ids)
    return scores, ids


def search_all(shards: list, removed: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The global top-k over every shard, merged as `merge_top_k` does (score, then smaller face_id)."""
    from jobs.index.shards import merge_top_k

    found = [search_shard(shard, removed, queries, k) for shard in shards]
    found = [pair for pair in found if pair[1].shape[1]]
    if not found:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    return merge_top_k([f[0] for f in found], [f[1] for f in found], k)


def _to_batch(probe_ids: np.ndarray, scores: np.ndarray, ids: np.ndarray):
    import pyarrow as pa

    keep = ids >= 0
    per_probe = keep.sum(axis=1)
    ranks = np.broadcast_to(np.arange(1, ids.shape[1] + 1, dtype=np.int32), ids.shape)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.repeat(probe_ids, per_probe), pa.int64()),
            pa.array(ids[keep], pa.int64()),
            pa.array(scores[keep].astype(np.float32), pa.float32()),
            pa.array(ranks[keep], pa.int32()),
        ],
        names=["probe_face_id", "gallery_face_id", "score", "rank"],
    )


def make_search_runner(context: dict[str, Any]) -> Callable[[Iterator], Iterator]:
    """mapInArrow over (probe_face_id, embedding[, shard]) rows -> CANDIDATES_DDL rows.

    Without a `shard` column the task searches every shard and `rank` is global; with it, each row's
    shard only, and `rank` is within that shard.
    """

    def run(batches: Iterator) -> Iterator:
        import faiss

        from jobs.index.shards import load_removed, load_shard

        # Spark already runs one task per core: FAISS's own threads would only oversubscribe them.
        faiss.omp_set_num_threads(context.get("threads", 1))
        removed = load_removed(context["index_dir"], context["manifest"])
        entries = {entry["shard"]: entry for entry in context["manifest"]["shards"]}

        def shard(key: int):
            return load_shard(context["index_dir"], entries[key], context["search_param"], context["search_value"])

        for batch in batches:
            if batch.num_rows == 0:
                continue
            probe_ids = batch.column("probe_face_id").to_numpy()
            flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
            vectors = flat.astype(np.float32).reshape(len(probe_ids), -1)
            if "shard" not in batch.schema.names:
                scores, ids = search_all([shard(key) for key in sorted(entries)], removed, vectors, context["k"])
                yield _to_batch(probe_ids, scores, ids)
                continue
            shard_keys = batch.column("shard").to_numpy()
            for key in np.unique(shard_keys):
                mask = shard_keys == key
                scores, ids = search_shard(shard(int(key)), removed, vectors[mask], context["k"])
                yield _to_batch(probe_ids[mask], scores, ids)

    return run
