"""Erasures registered while an embed runs: before each commit the chunk's rows of a newly registered erasure
become `erased` rows (their files rewritten), and after it the run deletes its own rows an erasure registered
in between names, with their files. Because forget registers before it deletes, one of these, or forget's own
delete, always sees the rows."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from jobs.common.commits import is_conflict_or_purged, with_commit_retries
from jobs.common.erasures import ERASED, ErasureRegister, read_register
from jobs.common.schema import to_faces_batch
from jobs.common.storage import upath
from jobs.faces.chunks import Embedded, Ledger, delete_files
from jobs.faces.files import write_faces_file
from jobs.faces.rows import erased_path, erased_row

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def erase_newly_registered(chunk: Embedded, ledger: Ledger) -> Embedded:
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
        adds[rewritten[1][0].file] = rewritten[0]  # the rewritten file's add action
        delete_files(ledger.table_path, [name])
    return Embedded(adds, meta, chunk.files_seen, chunk.skipped, chunk.checked_ids)


def _erased_file(table_path: str, name: str, register: ErasureRegister, ledger: Ledger) -> tuple[str, list] | None:
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


def erase_after_commit(spark: SparkSession, ledger: Ledger, committed: list[str]) -> None:
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
    delete_files(ledger.table_path, stale)  # they held the erased rows; no current version reads them
    log.warning(
        "faces table %s: an erasure was registered during this run's commit: its rows were deleted and %d of "
        "this run's files with them%s",
        ledger.table_path,
        len(stale),
        "" if committed else " (a MERGE's files stay in the history until lineup forget purges it)",
    )
