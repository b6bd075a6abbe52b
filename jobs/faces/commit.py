"""Committing the embed job's chunks, in order, on a background thread while the executors embed the
next chunk.

The Python workers write each task's rows as a Parquet file in the table's folder (`jobs.faces.files`)
and return each row's small columns to the driver (one chunk's rows: bounded by `files_per_commit`), so
deduplication and counts need no Spark job. A chunk is committed by adding its files to the table in one
Delta transaction (`jobs.common.delta_files`); a file holding rows that must not land (the same content
twice in the chunk, content an earlier chunk committed, a row the table held at the start) is rewritten
on the driver without them first. Once another writer has committed to the table during the run (or
the table's layout needs Spark's writer), every later chunk is MERGEd instead: the MERGE inserts only
face_ids the table does not hold, whatever another run committed, and its files are read as the source.

At most one commit is in flight: chunk N+1 is submitted only after chunk N's commit has landed, so a run
killed at any point has committed a prefix of its chunks, and a rerun skips exactly those images. In a
local session a MERGE runs in its own fair-scheduler pool, so its few small tasks are not queued behind
the embedding's.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from jobs.common.commits import is_conflict_or_purged, with_commit_retries
from jobs.common.delta_files import commit_files
from jobs.common.schema import FACES_ARROW, FACES_DDL
from jobs.common.timing import Phases
from jobs.faces.chunks import Counts, Embedded, Ledger, delete_files, rewrite_file
from jobs.faces.erasing import erase_after_commit, erase_newly_registered

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

COMMIT_POOL = "lineup-commit"  # the fair-scheduler pool commits run in (see jobs.common.spark)


class Committer:
    """Commits chunks in submission order, one at a time, on a background thread; every commit's counts
    are added to `counts`. Leaving the `with` block waits for the last commit (and raises its error)."""

    def __init__(self, spark: SparkSession, ledger: Ledger, counts: Counts, phases: Phases) -> None:
        self.spark, self.ledger, self.counts, self.phases = spark, ledger, counts, phases
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=COMMIT_POOL)
        self._pending: Future | None = None

    def __enter__(self) -> Committer:
        return self

    def submit(self, chunk: Embedded) -> None:
        self.wait()
        if not chunk.adds:
            self.counts.add({"files_seen": chunk.files_seen, "files_skipped_known": chunk.skipped}, {})
            return
        self._pending = self._pool.submit(self._commit, chunk)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.counts.add(*pending.result())

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        try:
            if error is None:
                self.wait()
            elif self._pending is not None:  # the chunk before the failure is good work: let it land
                try:
                    self.wait()
                except Exception:  # the error already raised is the one to report
                    log.exception("the commit before the failure failed too")
        finally:
            self._pool.shutdown(wait=True)

    def _commit(self, chunk: Embedded) -> tuple[dict[str, int], dict[str, int]]:
        self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", COMMIT_POOL)
        return commit_chunk(self.spark, chunk, self.ledger, self.phases)


def commit_chunk(
    spark: SparkSession, chunk: Embedded, ledger: Ledger, phases: Phases
) -> tuple[dict[str, int], dict[str, int]]:
    """Commit one chunk's new rows to the table; its counts and rows by status.

    An erasure registered while the chunk was embedded is applied here: before the commit its rows
    become `erased` rows; one registered between that check and the commit is applied just after it
    (the run's own rows deleted). forget registers before it deletes, so one of the two, or forget's own
    delete, always sees the rows."""
    chunk = erase_newly_registered(chunk, ledger)
    meta = chunk.meta
    processed = len({(r.source_path, r.source_path_raw) for r in meta})
    # Two files with the same bytes give the same face_ids: keep the first path in sorted order, so
    # a resumed run keeps exactly the row a clean run keeps.
    first_path: dict[int, str] = {}
    for r in meta:
        if r.face_id not in first_path or r.source_path < first_path[r.face_id]:
            first_path[r.face_id] = r.source_path
    unique = [r for r in meta if first_path[r.face_id] == r.source_path]
    kept: list | None = None
    if ledger.merge_reason is None:
        with phases.phase("commit", count=len(unique), unit="rows"):
            kept = _add_files(spark, chunk, unique, ledger)
    merged = kept is None
    if kept is not None:
        written = len(kept)
    else:
        written, kept = _merge_files(spark, chunk, unique, first_path, ledger, phases)
    assert kept is not None
    erase_after_commit(spark, ledger, [] if merged else ledger.last_committed)
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


def _add_files(spark: SparkSession, chunk: Embedded, unique: list, ledger: Ledger) -> list | None:
    """Add the chunk's files to the table (those holding rows that must not land rewritten without
    them); the rows committed, or None when the chunk must be MERGEd (`ledger.merge_reason` says why)."""

    present = {r.face_id for r in unique if r.face_id in ledger.committed_face_ids}
    if ledger.held_at_start is not None:
        unchecked = [r.face_id for r in unique if r.image_id is None or not _checked(r.image_id, chunk.checked_ids)]
        present |= ledger.held_at_start.face_ids_among(unchecked) if unchecked else set()
    kept = [r for r in unique if r.face_id not in present]
    keep = {(r.face_id, r.source_path) for r in kept}
    dropping = {r.file for r in chunk.meta if (r.face_id, r.source_path) not in keep}
    adds = [add for name, add in chunk.adds.items() if name not in dropping]
    rewritten = [rewrite_file(ledger.table_path, name, keep) for name in sorted(dropping)]
    adds += [add for add in rewritten if add is not None]
    if not adds:  # every row of the chunk was already there: nothing to commit
        delete_files(ledger.table_path, sorted(dropping))
        return kept
    appended = commit_files(
        spark, ledger.table_path, adds, FACES_ARROW.names, ledger.start_version, ledger.own_versions
    )
    if appended.version is None:
        ledger.merge_reason = appended.refused
        log.info("faces table %s: later chunks are MERGEd (%s)", ledger.table_path, appended.refused)
        delete_files(ledger.table_path, [json.loads(add)["add"]["path"] for add in rewritten if add is not None])
        return None
    ledger.own_versions.add(appended.version)
    ledger.last_committed = [json.loads(add)["add"]["path"] for add in adds]
    ledger.committed_face_ids.update(r.face_id for r in kept)
    delete_files(ledger.table_path, sorted(dropping))  # replaced by their rewrites: never in the table
    return kept


def _checked(image_id: str, checked_ids: set[str] | None) -> bool:
    return checked_ids is None or image_id in checked_ids


def _merge_files(
    spark: SparkSession, chunk: Embedded, unique: list, first_path: dict[int, str], ledger: Ledger, phases: Phases
) -> tuple[int, list]:
    """MERGE the chunk's files into the table, then delete them; (rows inserted, rows now in the table)."""
    from pyspark.sql import functions as F

    table_path = ledger.table_path
    files = [f"{table_path.rstrip('/')}/{name}" for name in sorted(chunk.adds)]
    # A few files per commit, not one per embedding task: the write and every later reader pay per file.
    source = spark.read.schema(FACES_DDL).parquet(*files).coalesce(spark.sparkContext.defaultParallelism)
    if len(unique) < len(chunk.meta):
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
    delete_files(table_path, sorted(chunk.adds))  # their rows are in the MERGE's own files now
    return written, kept


def _merge(spark: SparkSession, source: DataFrame, table_path: str) -> int:
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
        is_conflict=is_conflict_or_purged,  # an erasure's purge beside us: plan the MERGE again
    )
    first = metrics.first() if metrics is not None else None
    return int(first["num_inserted_rows"]) if first is not None else 0
