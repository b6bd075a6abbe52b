"""A run's chunks on their way into the faces table: what each holds (`Embedded`), what the commits know of the
table and of each other (`Ledger`), the counts, and the driver's own file operations (rewriting a file without
some rows, deleting files no commit names)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jobs.common.erasures import ErasureRegister
from jobs.common.storage import upath
from jobs.common.timing import Phases
from jobs.faces.files import write_faces_file
from jobs.faces.known import HeldImages

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


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
    written: DataFrame, phases: Phases, files_seen: int, skipped: int, checked_ids: set[str] | None = None
) -> Embedded:
    """Run the embedding once (the workers write the files); the rows' small columns come back."""
    with phases.phase("embed"):
        meta = written.collect()
    adds = {row.file: row.add for row in meta if row.add is not None}
    return Embedded(adds, meta, files_seen, skipped, checked_ids)


def rewrite_file(table_path: str, name: str, keep: set[tuple[int, str]]) -> str | None:
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


def delete_files(table_path: str, names: list[str]) -> None:
    """Delete files that never became part of the table (VACUUM would, days later)."""

    for name in names:
        try:
            (upath(table_path) / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("could not delete uncommitted file %s/%s (VACUUM removes it): %s", table_path, name, error)
