"""Recall of a built index against exact search, with the ground truth computed on the executors.

The driver holds only the held-out queries and k results per query: each gallery partition computes its
exact top-k for the queries (blocked GEMM, batch by batch), and the partial lists merge pairwise in a
tree (`treeReduce`) with the same tie rule as every other search (score, then smaller face_id). This is
what makes recall measurable for an IVF-PQ index, chosen precisely because the vectors do not fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from jobs.common.schema import ddl_of
from jobs.shards import build
from jobs.shards.files import load_index
from jobs.shards.search import merge_top_k

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from pyspark.sql import DataFrame
    from upath import UPath

    from jobs.index.config import IndexSettings
    from jobs.shards.manifest import Manifest

_PARTIAL_ARROW = pa.schema([("scores", pa.binary()), ("ids", pa.binary()), ("width", pa.int32())])


def pick_queries(frame: DataFrame, count: int, seed: int, total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`count` gallery vectors (ids, vectors) at positions drawn by `default_rng(seed)` among the ids in
    ascending order: reproducible from the faces table alone. Only the ids travel to the driver."""
    from pyspark.sql import functions as F

    total = frame.count() if total is None else total  # a caller that counted already saves a scan
    positions = np.random.default_rng(seed).choice(total, size=min(count, total), replace=False)
    wanted = frame.sparkSession.sparkContext.broadcast(set(positions.tolist()))
    picked_ids = (
        frame.select("face_id")
        .orderBy("face_id")
        .rdd.map(lambda row: row[0])
        .zipWithIndex()
        .filter(lambda pair: pair[1] in wanted.value)
        .collect()
    )
    by_position = {position: face_id for face_id, position in picked_ids}
    ids = np.array([by_position[p] for p in positions.tolist()], dtype=np.int64)
    rows = frame.where(F.col("face_id").isin(ids.tolist())).select("face_id", "embedding").collect()
    vector_of = {row.face_id: row.embedding for row in rows}
    return ids, np.array([vector_of[i] for i in ids.tolist()], dtype=np.float32)


def exact_truth(frame: DataFrame, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, ids) of `queries` over every (face_id, embedding) row of `frame`."""
    spark = frame.sparkSession
    shared = spark.sparkContext.broadcast(np.ascontiguousarray(queries, dtype=np.float32))
    partial = frame.select("face_id", "embedding").mapInArrow(_partition_top_k(shared, k), ddl_of(_PARTIAL_ARROW))
    count = len(queries)

    def decode(row: Any) -> tuple[np.ndarray, np.ndarray]:
        scores = np.frombuffer(row.scores, dtype=np.float32).reshape(count, row.width)
        return scores, np.frombuffer(row.ids, dtype=np.int64).reshape(count, row.width)

    def merge(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return merge_top_k([a[0], b[0]], [a[1], b[1]], k)

    return partial.rdd.map(decode).treeReduce(merge)


def _partition_top_k(shared: Any, k: int) -> Callable[[Iterator], Iterator]:
    """Executor side: one partition's exact top-k for the broadcast queries, merged batch by batch so a
    task holds one Arrow batch of the gallery at a time. Input: face_id BIGINT, embedding ARRAY<FLOAT>;
    output: one row (scores, ids as raw little-endian arrays, width) per non-empty partition."""

    def run(batches: Iterator) -> Iterator:
        queries = shared.value
        best: tuple[np.ndarray, np.ndarray] | None = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = batch.column("face_id").to_numpy().astype(np.int64)
            flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
            found = build.exact_top_k(flat.astype(np.float32).reshape(len(ids), -1), ids, queries, k)
            best = found if best is None else merge_top_k([best[0], found[0]], [best[1], found[1]], k)
        if best is not None:
            yield pa.RecordBatch.from_pydict(
                {"scores": [best[0].tobytes()], "ids": [best[1].tobytes()], "width": [best[1].shape[1]]},
                schema=_PARTIAL_ARROW,
            )

    return run


def measure_recall(
    frame: DataFrame,
    index_dir: UPath,
    settings: IndexSettings,
    rows: int | None = None,
    manifest: Manifest | None = None,
) -> dict[str, Any]:
    """recall@k of the index at `index_dir` for held-out gallery vectors, each left out of its own
    results, and the cheapest search parameter that reaches the floor (tuned with the same search code
    queries run)."""
    ids, queries = pick_queries(frame, settings.holdout_queries, settings.seed, rows)
    k = settings.recall_k
    _, truth = exact_truth(frame, queries, k + 1)
    truth = build.without_queries(truth, ids, k)
    index = load_index(index_dir, manifest)  # the staged manifest: it is published once this is measured
    value, recall, tried = build.tune(index, queries, truth, k, settings.recall_floor, query_ids=ids)
    return {
        "search_value": value,
        "recall_at_k": round(recall, 5),
        "recall_k": settings.recall_k,
        "recall_floor": settings.recall_floor,
        "recall_queries": len(queries),
        "recall_tried": tried,
    }
