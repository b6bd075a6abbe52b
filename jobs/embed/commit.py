"""Committing the embed job's chunks: one Delta MERGE per chunk, in order, on a background thread while
the executors embed the next chunk.

A chunk's rows are embedded once and cached (`embed_rows`); their small columns come back to the driver
(one chunk's rows: bounded by `files_per_commit`), so deduplication and counts need no further Spark
jobs in the usual case. Only when the MERGE inserted fewer rows than offered (content another chunk or
run committed first) is the table read back to see which rows are there.

At most one commit is in flight: chunk N+1 is submitted only after chunk N's commit has landed, so a run
killed at any point has committed a prefix of its chunks, and a rerun skips exactly those images. In a
local session the commit runs in its own fair-scheduler pool, so its few small tasks are not queued
behind the embedding's.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from jobs.common.commits import with_commit_retries
from jobs.common.timing import Phases

log = logging.getLogger(__name__)

COMMIT_POOL = "lineup-commit"  # the fair-scheduler pool commits run in (see jobs.common.spark)


@dataclass
class Counts:
    files_seen: int = 0
    files_skipped_known: int = 0
    files_processed: int = 0
    duplicate_content_files: int = 0
    faces: int = 0
    rows_written: int = 0
    rows_already_present: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, other: dict[str, int], by_status: dict[str, int]) -> None:
        for key, value in other.items():
            setattr(self, key, getattr(self, key) + value)
        for status, value in by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + value


@dataclass
class Embedded:
    """One chunk's rows, computed and cached (`rows` is None when there was nothing to embed), with the
    driver's copy of their small columns (`meta`: face_id, source_path, source_path_raw, status)."""

    rows: Any
    meta: list
    files_seen: int
    skipped: int


def embed_rows(rows, phases: Phases, files_seen: int, skipped: int) -> Embedded:
    """Run the embedding once: rows are cached for the MERGE, their small columns collected."""
    from pyspark import StorageLevel

    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)  # the MERGE must see the rows the counts saw
    try:
        with phases.phase("embed"):
            meta = rows.select("face_id", "source_path", "source_path_raw", "status").collect()

    except BaseException:
        rows.unpersist()
        raise
    return Embedded(rows, meta, files_seen, skipped)


class Committer:
    """Commits chunks in submission order, one at a time, on a background thread; every commit's counts
    are added to `counts`. Leaving the `with` block waits for the last commit (and raises its error)."""

    def __init__(self, spark, table_path: str, counts: Counts, phases: Phases) -> None:
        self.spark, self.table_path, self.counts, self.phases = spark, table_path, counts, phases
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=COMMIT_POOL)
        self._pending: Future | None = None

    def __enter__(self) -> Committer:
        return self

    def submit(self, chunk: Embedded) -> None:
        self.wait()
        if chunk.rows is None:
            self.counts.add({"files_seen": chunk.files_seen, "files_skipped_known": chunk.skipped}, {})
            return
        self._pending = self._pool.submit(self._commit, chunk)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.counts.add(*pending.result())

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is None:
                self.wait()
            elif self._pending is not None:  # the chunk before the failure is good work: let it land
                try:
                    self.wait()
                except Exception:  # noqa: BLE001 - the error already raised is the one to report
                    log.exception("the commit before the failure failed too")
        finally:
            self._pool.shutdown(wait=True)

    def _commit(self, chunk: Embedded) -> tuple[dict[str, int], dict[str, int]]:
        self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", COMMIT_POOL)
        try:
            return commit_chunk(self.spark, chunk, self.table_path, self.phases)
        finally:
            chunk.rows.unpersist()


def commit_chunk(spark, chunk: Embedded, table_path: str, phases: Phases) -> tuple[dict[str, int], dict[str, int]]:
    """MERGE one chunk's new rows into the table; its counts and rows by status."""
    from pyspark.sql import functions as F

    meta = chunk.meta
    processed = len({(r.source_path, r.source_path_raw) for r in meta})
    # Two files with the same bytes give the same face_ids: keep the first path in sorted order, so
    # a resumed run keeps exactly the row a clean run keeps.
    first_path: dict[int, str] = {}
    for r in meta:
        if r.face_id not in first_path or r.source_path < first_path[r.face_id]:
            first_path[r.face_id] = r.source_path
    unique = [r for r in meta if first_path[r.face_id] == r.source_path]
    # A few files per commit, not one per embedding task: the write and every later reader pay per file.
    source = chunk.rows.coalesce(spark.sparkContext.defaultParallelism)
    if len(unique) < len(meta):
        keep = spark.createDataFrame(sorted(first_path.items()), "face_id BIGINT, source_path STRING")
        source = source.join(F.broadcast(keep), ["face_id", "source_path"], "left_semi")
    with phases.phase("merge", count=len(unique), unit="rows"):
        written = _merge(spark, source, table_path)
    kept = unique
    if written < len(unique):
        with phases.phase("reconcile"):
            # What the table now holds for these files: a copy of content committed by an earlier
            # chunk (or run) is not there under its own path, and is counted as a duplicate.
            held = spark.read.format("delta").load(table_path).select("face_id", "source_path")
            there = source.join(held, ["face_id", "source_path"], "left_semi")
            kept = there.select("face_id", "source_path", "source_path_raw", "status").collect()
    by_status: dict[str, int] = {}
    for r in kept:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    recorded_paths = len({(r.source_path, r.source_path_raw) for r in kept})
    counts = {
        "files_seen": chunk.files_seen,
        "files_skipped_known": chunk.skipped,
        "files_processed": processed,
        "duplicate_content_files": processed - recorded_paths,
        "faces": by_status.get("ok", 0),
        "rows_written": written,
        "rows_already_present": len(unique) - written,
    }
    return counts, by_status


def _merge(spark, source, table_path: str) -> int:
    """Insert the rows whose face_id the table lacks (retried on a concurrent commit); rows inserted."""
    from delta.tables import DeltaTable

    metrics = with_commit_retries(
        lambda: (
            DeltaTable.forPath(spark, table_path)
            .alias("t")
            .merge(source.alias("s"), "t.face_id = s.face_id")
            .whenNotMatchedInsertAll()
            .execute()
        ),
        table_path,
    )
    first = metrics.first() if metrics is not None else None
    return int(first["num_inserted_rows"]) if first is not None else 0
