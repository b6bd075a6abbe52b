"""Executor side of a query: search one shard for a partition of probes (FAISS, no Spark).

Each task gets (probe, shard) rows; the shard is loaded once per Python worker and reused by later
tasks. A task returns each probe's top-k within its shard; the driver's plan merges shards per probe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

CANDIDATES_DDL = "probe_face_id BIGINT, shard INT, gallery_face_id BIGINT, score FLOAT"


def search_shard(shard, removed: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) of one shard; removed ids are dropped, missing entries have id -1."""
    if shard.ntotal == 0 or len(queries) == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    extra = min(len(removed), 4 * k)
    scores, ids = shard.search(np.ascontiguousarray(queries, dtype=np.float32), min(k + extra, shard.ntotal))
    if len(removed):
        ids = np.where(np.isin(ids, removed), -1, ids)
    return scores, ids


def make_search_runner(context: dict[str, Any]) -> Callable[[Iterator], Iterator]:
    """A mapInArrow function over rows (shard, probe_face_id, embedding) -> CANDIDATES_DDL rows."""

    def run(batches: Iterator) -> Iterator:
        import faiss
        import pyarrow as pa

        from jobs.index.shards import load_removed, load_shard

        # Spark already runs one task per core: FAISS's own threads would only oversubscribe them.
        faiss.omp_set_num_threads(context.get("threads", 1))
        removed = load_removed(context["index_dir"], context["manifest"])
        entries = {entry["shard"]: entry for entry in context["manifest"]["shards"]}
        for batch in batches:
            if batch.num_rows == 0:
                continue
            shard_keys = batch.column("shard").to_numpy()
            probe_ids = batch.column("probe_face_id").to_numpy()
            flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
            vectors = flat.astype(np.float32).reshape(len(probe_ids), -1)
            for shard_key in np.unique(shard_keys):
                mask = shard_keys == shard_key
                shard = load_shard(
                    context["index_dir"], entries[int(shard_key)], context["search_param"], context["search_value"]
                )
                scores, ids = search_shard(shard, removed, vectors[mask], context["k"])
                keep = ids >= 0
                rows = keep.sum(axis=1)
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(np.repeat(probe_ids[mask], rows), pa.int64()),
                        pa.array(np.full(int(rows.sum()), shard_key, np.int32), pa.int32()),
                        pa.array(ids[keep], pa.int64()),
                        pa.array(scores[keep], pa.float32()),
                    ],
                    names=["probe_face_id", "shard", "gallery_face_id", "score"],
                )

    return run
