"""Executor side of a query: search shards for a partition of probes (the search itself is
`jobs.shards.search`, shared with the index job's recall tuning).

Two plans. `all_shards`: a task searches every shard for its probes and merges them itself (shards are
loaded once per Python worker and reused by later tasks): one stage, no shuffle, while the whole index
fits a worker's memory. It can return one row per probe (`lists`): its candidates and its ranked subjects
as lists, from which both output tables follow without regrouping. `per_shard`: a task gets (probe, shard)
rows and searches only that shard, so a worker holds one shard at a time; the driver's plan merges the
shards' lists per probe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from jobs.common.normalization import Normalization
from jobs.common.schema import ddl_of
from jobs.query.ranking import CANDIDATE_ARROW, SUBJECT_ARROW, rank_subjects
from jobs.shards.face_subjects import FaceSubjects, load_face_subjects
from jobs.shards.files import load_removed, load_shard
from jobs.shards.manifest import Manifest
from jobs.shards.search import search_shard, search_shards

CANDIDATES_ARROW = pa.schema(
    [
        ("probe_face_id", pa.int64()),
        ("gallery_face_id", pa.int64()),
        ("score", pa.float32()),
        ("normalized_score", pa.float32()),  # null unless the threshold's calibration normalizes
        ("rank", pa.int32()),
        ("gallery_subject_id", pa.string()),  # null where the generation keeps no face_subjects file
    ]
)
CANDIDATES_DDL = ddl_of(CANDIDATES_ARROW)
# `lists`: one row per probe, its candidates in rank order and its subjects ranked
CANDIDATE_LISTS_ARROW = pa.schema(
    [
        ("probe_face_id", pa.int64()),
        ("candidates", pa.list_(CANDIDATE_ARROW)),
        ("ranked_subjects", pa.list_(SUBJECT_ARROW)),
    ]
)
CANDIDATE_LISTS_DDL = ddl_of(CANDIDATE_LISTS_ARROW)


def _to_batch(
    probe_ids: np.ndarray,
    scores: np.ndarray,
    ids: np.ndarray,
    normalized: np.ndarray | None = None,
    subjects: FaceSubjects | None = None,
) -> pa.RecordBatch:
    """Candidate rows (CANDIDATES_ARROW), each probe's in rank order."""
    keep = ids >= 0
    ranks = np.broadcast_to(np.arange(1, ids.shape[1] + 1, dtype=np.int32), ids.shape)
    kept = int(keep.sum())
    gallery_ids = ids[keep]
    columns = [
        pa.array(np.repeat(probe_ids, keep.sum(axis=1)), pa.int64()),
        pa.array(gallery_ids, pa.int64()),
        pa.array(scores[keep].astype(np.float32), pa.float32()),
        pa.nulls(kept, pa.float32()) if normalized is None else pa.array(normalized[keep].astype(np.float32)),
        pa.array(ranks[keep], pa.int32()),
        pa.nulls(kept, pa.string()) if subjects is None else subjects.lookup(gallery_ids),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=CANDIDATES_ARROW)


def _to_lists(
    probe_ids: np.ndarray, rows: pa.RecordBatch, per_probe: np.ndarray, details: pa.RecordBatch | None
) -> pa.RecordBatch:
    """Candidate rows (`_to_batch`, no details; `per_probe` of them for each probe in turn) as one row per
    probe: CANDIDATE_LISTS_ARROW, then `details`' columns."""
    offsets = pa.array(np.concatenate([[0], np.cumsum(per_probe)]), pa.int32())
    items = pa.StructArray.from_arrays([rows.column(f.name) for f in CANDIDATE_ARROW], fields=list(CANDIDATE_ARROW))
    candidates = pa.ListArray.from_arrays(offsets, items)
    columns = [pa.array(probe_ids, pa.int64()), candidates, rank_subjects(candidates)]
    if details is None:
        return pa.RecordBatch.from_arrays(columns, schema=CANDIDATE_LISTS_ARROW)
    schema = pa.schema([*CANDIDATE_LISTS_ARROW, *details.schema])
    return pa.RecordBatch.from_arrays([*columns, *details.columns], schema=schema)


@dataclass(frozen=True)
class SearchContext:
    """What every search task needs, pickled once into the runner's closure."""

    index_dir: str
    manifest: Manifest  # the pinned generation
    k: int  # candidates fetched per probe
    search_value: int | None  # nprobe / efSearch; None: the index's own
    threads: int = 1
    normalization: Normalization | None = None  # rescore the `k` candidates, keep the `keep` best
    gallery_offsets: Any = None  # a Broadcast of (sorted gallery face ids, their offsets)
    keep: int | None = None
    subjects: bool = False  # name each candidate's subject from the generation's face_subjects file
    lists: bool = False  # without a shard column: one row per probe (CANDIDATE_LISTS_ARROW)


def make_search_runner(context: SearchContext) -> Callable[[Iterator], Iterator]:
    """mapInArrow over (probe_face_id, embedding[, shard]) rows -> CANDIDATES_DDL rows.

    Without a `shard` column the task searches every shard and `rank` is global; with it, each row's
    shard only, and `rank` is within that shard. With a normalization in the context, the `k` raw
    candidates are rescored and the `keep` best by normalized score are returned (ranked by it).
    With `lists` (no `shard` column), any further input columns (the probe's details) follow its one
    row, so the matches need no join back to the probes.
    """

    def run(batches: Iterator) -> Iterator:
        import faiss

        # Spark already runs one task per core: FAISS's own threads would only oversubscribe them.
        faiss.omp_set_num_threads(context.threads)
        removed = load_removed(context.index_dir, context.manifest)
        entries = {entry.shard: entry for entry in context.manifest.shards}
        param = context.manifest.search_param

        def shard(key: int) -> Any:
            return load_shard(context.index_dir, entries[key], param, context.search_value)

        normalization = context.normalization
        gallery = context.gallery_offsets.value if normalization is not None else None
        subjects = load_face_subjects(context.index_dir, context.manifest) if context.subjects else None

        def batch_of(
            probe_ids: np.ndarray,
            vectors: np.ndarray,
            scores: np.ndarray,
            ids: np.ndarray,
            details: pa.RecordBatch | None = None,
        ) -> pa.RecordBatch:
            normalized = None
            if normalization is not None and gallery is not None and context.keep is not None:
                scores, ids, normalized = normalization.rescore_top(vectors, scores, ids, gallery, context.keep)
            rows = _to_batch(probe_ids, scores, ids, normalized, subjects)
            return _to_lists(probe_ids, rows, (ids >= 0).sum(axis=1), details) if context.lists else rows

        for batch in batches:
            if batch.num_rows == 0:
                continue
            probe_ids = batch.column("probe_face_id").to_numpy()
            flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
            vectors = flat.astype(np.float32).reshape(len(probe_ids), -1)
            if "shard" not in batch.schema.names:
                scores, ids = search_shards([shard(key) for key in sorted(entries)], removed, vectors, context.k)
                others = [name for name in batch.schema.names if name not in ("probe_face_id", "embedding")]
                yield batch_of(probe_ids, vectors, scores, ids, batch.select(others) if others else None)
                continue
            shard_keys = batch.column("shard").to_numpy()
            for key in np.unique(shard_keys):
                mask = shard_keys == key
                scores, ids = search_shard(shard(int(key)), removed, vectors[mask], context.k)
                yield batch_of(probe_ids[mask], vectors[mask], scores, ids)

    return run
