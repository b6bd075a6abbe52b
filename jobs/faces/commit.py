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
from dataclasses import dataclass, field

from jobs.common.commits import is_conflict_or_purged, with_commit_retries
from jobs.common.delta_files import commit_files
from jobs.common.erasures import ERASED, ErasureRegister, read_register
from jobs.common.schema import FACES_ARROW, FACES_DDL, to_faces_batch
from jobs.common.storage import upath
from jobs.common.timing import Phases
from jobs.faces.files import write_faces_file
from jobs.faces.known import HeldImages
from jobs.faces.rows import erased_path, erased_row

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
    """One chunk's files, written by the workers in the table's folder but not committed (`adds`: file
    name -> Delta add action), and the driver's copy of their rows' small columns (`meta`: file, face_id,
    image_id, source_path, source_path_raw, status). `checked_ids`: the image ids the first pass found
    missing from the table at the run's start (None: every row with an image id was checked)."""

    adds: dict[str, str]
    meta: list
    files_seen: int
    skipped: int
    checked_ids: set[str] | None = None


@dataclass
class Ledger:
    """What the run's commits need to know of the table and of each other."""

    table_path: str
    start_version: int
    held_at_start: HeldImages | None  # None: the table held no rows at the run's start
    own_versions: set[int] = field(default_factory=set)
    committed_face_ids: set[int] = field(default_factory=set)
    merge_reason: str | None = None  # once set, every later chunk is MERGEd
    erasures_table: str | None = None  # the register, read again around every commit
    model_id: str | None = None
    run_id: str | None = None
    source_prefix: str | None = None  # how this input's source paths start (see `source_prefix`)
    register: ErasureRegister = field(default_factory=ErasureRegister)  # what the workers embedded with
    checked: ErasureRegister | None = None  # what the last pre-commit check read
    last_committed: list[str] = field(default_factory=list)  # the files the last add-files commit added
    images_erased_at_commit: int = 0  # by an erasure registered after the run started


def collect_written(
    written, phases: Phases, files_seen: int, skipped: int, checked_ids: set[str] | None = None
) -> Embedded:
    """Run the embedding once (the workers write the files); the rows' small columns come back."""
    with phases.phase("embed"):
        meta = written.collect()
    adds = {row.file: row.add for row in meta if row.add is not None}
    return Embedded(adds, meta, files_seen, skipped, checked_ids)


class Committer:
    """Commits chunks in submission order, one at a time, on a background thread; every commit's counts
    are added to `counts`. Leaving the `with` block waits for the last commit (and raises its error)."""

    def __init__(self, spark, ledger: Ledger, counts: Counts, phases: Phases) -> None:
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

    def __exit__(self, kind, error, traceback) -> None:
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


def commit_chunk(spark, chunk: Embedded, ledger: Ledger, phases: Phases) -> tuple[dict[str, int], dict[str, int]]:
    """Commit one chunk's new rows to the table; its counts and rows by status.

    An erasure registered while the chunk was embedded is applied here: before the commit its rows
    become `erased` rows; one registered between that check and the commit is applied just after it
    (the run's own rows deleted). forget registers before it deletes, so one of the two, or forget's own
    delete, always sees the rows."""
    chunk = _erase_newly_registered(chunk, ledger)
    meta = chunk.meta
    processed = len({(r.source_path, r.source_path_raw) for r in meta})
    # Two files with the same bytes give the same face_ids: keep the first path in sorted order, so
    # a resumed run keeps exactly the row a clean run keeps.
    first_path: dict[int, str] = {}
    for r in meta:
        if r.face_id not in first_path or r.source_path < first_path[r.face_id]:
            first_path[r.face_id] = r.source_path
    unique = [r for r in meta if first_path[r.face_id] == r.source_path]
    kept = None
    if ledger.merge_reason is None:
        with phases.phase("commit", count=len(unique), unit="rows"):
            kept = _add_files(spark, chunk, unique, ledger)
    merged = kept is None
    if kept is not None:
        written = len(kept)
    else:
        written, kept = _merge_files(spark, chunk, unique, first_path, ledger, phases)
    _erase_after_commit(spark, ledger, [] if merged else ledger.last_committed)
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


def _add_files(spark, chunk: Embedded, unique: list, ledger: Ledger) -> list | None:
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
    rewritten = [_rewrite(ledger.table_path, name, keep) for name in sorted(dropping)]
    adds += [add for add in rewritten if add is not None]
    if not adds:  # every row of the chunk was already there: nothing to commit
        _delete_files(ledger.table_path, sorted(dropping))
        return kept
    appended = commit_files(
        spark, ledger.table_path, adds, FACES_ARROW.names, ledger.start_version, ledger.own_versions
    )
    if appended.version is None:
        ledger.merge_reason = appended.refused
        log.info("faces table %s: later chunks are MERGEd (%s)", ledger.table_path, appended.refused)
        _delete_files(ledger.table_path, [json.loads(add)["add"]["path"] for add in rewritten if add is not None])
        return None
    ledger.own_versions.add(appended.version)
    ledger.last_committed = [json.loads(add)["add"]["path"] for add in adds]
    ledger.committed_face_ids.update(r.face_id for r in kept)
    _delete_files(ledger.table_path, sorted(dropping))  # replaced by their rewrites: never in the table
    return kept


def _erase_newly_registered(chunk: Embedded, ledger: Ledger) -> Embedded:
    """The chunk with rows an erasure registered since the last check names turned into `erased` rows
    (their files rewritten); the chunk itself when the register did not change."""
    if ledger.erasures_table is None:
        return chunk
    register = read_register(ledger.erasures_table, ledger.model_id)
    ledger.checked = register
    # Every chunk was embedded with the register read at the run's start: anything added since is news.
    if register.version == ledger.register.version or not _added(register, ledger.register):
        return chunk
    adds, meta = dict(chunk.adds), list(chunk.meta)
    for name in sorted(chunk.adds):
        rewritten = _erased_file(ledger.table_path, name, register, ledger)
        if rewritten is None:
            continue
        del adds[name]
        meta = [r for r in meta if r.file != name] + rewritten[1]
        adds[rewritten[1][0].file] = rewritten[0]
        _delete_files(ledger.table_path, [name])
    return Embedded(adds, meta, chunk.files_seen, chunk.skipped, chunk.checked_ids)


def _erased_file(table_path: str, name: str, register: ErasureRegister, ledger: Ledger):
    """File `name` rewritten with the rows `register` erases as one `erased` row per image: (its add
    action, its rows' small columns), or None when it holds no erased row."""
    import pyarrow.parquet as pq
    from pyspark.sql import Row

    with (upath(table_path) / name).open("rb") as stream:
        rows = pq.read_table(stream).to_pylist()

    def erasure(r: dict) -> str | None:
        if r["status"] == ERASED:
            return None
        return register.erasure_of(r["image_id"], r["subject_id"]) or register.erasure_of_face(r["face_id"])

    if not any(erasure(r) for r in rows):
        return None
    kept, erased_images = [], set()
    for r in rows:
        erasure_id = erasure(r)
        if erasure_id is None:
            kept.append(r)
        elif r["image_id"] not in erased_images:
            erased_images.add(r["image_id"])
            path = erased_path(r["source_path"], _name_in_archive(r["source_path"], ledger.source_prefix))
            kept.append(erased_row(r["image_id"], path, erasure_id, r["model_id"], r["run_id"], r["embedded_at"]))
    ledger.images_erased_at_commit += len(erased_images)
    log.info("faces table %s: %d image(s) of %s erased since the run started", table_path, len(erased_images), name)
    written = write_faces_file(table_path, to_faces_batch(kept))
    add = written.column("add")[0].as_py()
    return add, [Row(**row, add=None) for row in written.drop_columns(["add"]).to_pylist()]


def _name_in_archive(source_path: str, prefix: str | None) -> str:
    return source_path[len(prefix) :] if prefix and source_path.startswith(prefix) else source_path


def _added(register: ErasureRegister, before: ErasureRegister) -> bool:
    return any(set(getattr(register, kind)) - set(getattr(before, kind)) for kind in ("images", "subjects", "faces"))


def _erase_after_commit(spark, ledger: Ledger, committed: list[str]) -> None:
    """An erasure registered between the pre-commit check and the commit: this run's rows it names
    are deleted from the table at once (forget may have finished its own delete before our commit),
    and the files this commit added that held them (`committed`) are deleted from storage too."""
    if ledger.erasures_table is None or ledger.checked is None:
        return
    before = ledger.checked
    register = read_register(ledger.erasures_table, ledger.model_id)
    if register.version == before.version or not _added(register, before):
        return
    images = sorted(set(register.images) - set(before.images))
    subjects = sorted(set(register.subjects) - set(before.subjects))
    faces = sorted(set(register.faces) - set(before.faces))
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    mine = (F.col("run_id") == F.lit(ledger.run_id)) & (F.col("status") != ERASED)
    named = (
        F.sha2(F.col("image_id"), 256).isin(images)
        | F.sha2(F.col("subject_id"), 256).isin(subjects)
        | F.sha2(F.col("face_id").cast("string"), 256).isin(faces)
    )

    def delete() -> bool:  # each try on the latest version: forget's purge may have run beside us
        table = DeltaTable.forPath(spark, ledger.table_path)
        if not table.toDF().where(mine & named).limit(1).count():
            return False
        table.delete(mine & named)
        return True

    if not with_commit_retries(delete, ledger.table_path, is_conflict=is_conflict_or_purged):
        return
    ledger.merge_reason = ledger.merge_reason or "an erasure was applied to this run's rows"
    current = {uri.rsplit("/", 1)[-1] for uri in DeltaTable.forPath(spark, ledger.table_path).toDF().inputFiles()}
    stale = [name for name in committed if name not in current]
    _delete_files(ledger.table_path, stale)  # they held the erased rows; no current version reads them
    log.warning(
        "faces table %s: an erasure was registered during this run's commit: its rows were deleted and %d of "
        "this run's files with them%s",
        ledger.table_path,
        len(stale),
        "" if committed else " (a MERGE's files stay in the history until lineup forget purges it)",
    )


def _checked(image_id: str, checked_ids: set[str] | None) -> bool:
    return checked_ids is None or image_id in checked_ids


def _rewrite(table_path: str, name: str, keep: set[tuple[int, str]]) -> str | None:
    """A new file with only the `keep` rows of file `name`; its add action (None when no row is kept)."""
    import pyarrow.parquet as pq

    with (upath(table_path) / name).open("rb") as stream:
        table = pq.read_table(stream)
    mask = [
        (f, p) in keep for f, p in zip(table.column("face_id").to_pylist(), table.column("source_path").to_pylist())
    ]
    kept = table.filter(mask)
    if kept.num_rows == 0:
        return None
    written = write_faces_file(table_path, kept.combine_chunks().to_batches()[0])
    return written.column("add")[0].as_py()


def _merge_files(spark, chunk: Embedded, unique: list, first_path: dict[int, str], ledger: Ledger, phases: Phases):
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
    _delete_files(table_path, sorted(chunk.adds))  # their rows are in the MERGE's own files now
    return written, kept


def _delete_files(table_path: str, names: list[str]) -> None:
    """Delete files that never became part of the table (VACUUM would, days later)."""

    for name in names:
        try:
            (upath(table_path) / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("could not delete uncommitted file %s/%s (VACUUM removes it): %s", table_path, name, error)


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
        is_conflict=is_conflict_or_purged,  # an erasure's purge beside us: plan the MERGE again
    )
    first = metrics.first() if metrics is not None else None
    return int(first["num_inserted_rows"]) if first is not None else 0
