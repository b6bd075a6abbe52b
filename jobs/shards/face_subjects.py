"""Which subject each indexed face belongs to, kept with the index generation.

A query's candidates are face_ids; the matches table also names each candidate's subject, and the error
budget counts the gallery's subjects. Read from the faces table, that is a scan of every gallery row per
query (at 10M faces the largest cost after the search itself). A generation therefore keeps one Arrow IPC
file, `face_subjects.gG.arrow` (face_id sorted, subject_id dictionary-encoded), named with its sha256 by
the manifest like a shard, and states its subject count. The search tasks load it once per Python worker
and name each candidate's subject themselves.

Every writer of a generation writes it: a build and an update (from the faces that generation indexes),
an erasure (the same file less the erased faces: a subject with no face left is gone from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.common.storage import AnyPath
from jobs.shards.files import load_once, write_arrow_file
from jobs.shards.gallery import indexed_faces

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from jobs.shards.manifest import Manifest

PREFIX = "face_subjects."
FACE_SUBJECTS_ARROW = pa.schema([("face_id", pa.int64()), ("subject_id", pa.dictionary(pa.int32(), pa.string()))])


def face_subjects_of(frame: DataFrame) -> pa.Table:
    """The (face_id, subject_id) rows of the faces a generation indexes, sorted by face_id (one scan of two
    columns; the driver holds ~20 bytes a face)."""
    table = frame.select("face_id", "subject_id").toArrow()
    return sorted_face_subjects(table.column("face_id"), table.column("subject_id"))


def sorted_face_subjects(face_ids: Any, subject_ids: Any) -> pa.Table:
    """The file's table from any (face_id, subject_id) columns: sorted by face_id, subjects dictionary-encoded.

    >>> t = sorted_face_subjects(pa.array([7, 2, 5]), pa.array(["b", "a", None]))
    >>> t.column("face_id").to_pylist(), t.column("subject_id").to_pylist()
    ([2, 5, 7], ['a', None, 'b'])
    """
    ids = pa.chunked_array([face_ids]) if isinstance(face_ids, pa.Array) else face_ids
    subjects = pa.chunked_array([subject_ids]) if isinstance(subject_ids, pa.Array) else subject_ids
    order = np.argsort(ids.to_numpy(), kind="stable")
    encoded = pc.take(subjects.cast(pa.string()), pa.array(order)).combine_chunks().dictionary_encode()
    return pa.table(
        [pc.take(ids, pa.array(order)).combine_chunks(), encoded.cast(FACE_SUBJECTS_ARROW.field(1).type)],
        schema=FACE_SUBJECTS_ARROW,
    )


def write_face_subjects(directory: AnyPath, generation: int, table: pa.Table, tag: str = "g") -> dict[str, Any]:
    """Write a generation's file (`tag` g: a build or an update, e: an erasure); the manifest fields naming it."""
    name = f"{PREFIX}{tag}{generation}.arrow"
    return {
        "face_subjects_file": name,
        "face_subjects_sha256": write_arrow_file(directory, name, table, FACE_SUBJECTS_ARROW),
        "gallery_subjects": subject_count(table),
    }


def is_face_subjects_file(name: str) -> bool:
    return name.startswith(PREFIX) and name.endswith(".arrow")


def add_face_subjects(spark: SparkSession, manifest: Manifest, directory: AnyPath, generation: int) -> None:
    """Write the file of the faces the (unpublished) manifest indexes (its table at its version, status ok,
    its model, above its floor) and name it there."""
    for key, value in write_face_subjects(
        directory, generation, face_subjects_of(indexed_faces(spark, manifest))
    ).items():
        setattr(manifest, key, value)


def subject_count(table: pa.Table) -> int:
    """Distinct subjects among the faces (faces without a subject_id not counted)."""
    column = table.column("subject_id").combine_chunks()
    used = pc.unique(column.indices.drop_null()) if len(column) else pa.array([], pa.int32())
    return len(used)


def read_face_subjects_bytes(data: bytes) -> pa.Table:
    return pa.ipc.open_file(pa.BufferReader(data)).read_all()


def without_faces(table: pa.Table, face_ids: np.ndarray) -> pa.Table:
    """The table less the rows of `face_ids`, its dictionary rebuilt (an erased subject's id leaves it too)."""
    keep = ~np.isin(table.column("face_id").to_numpy(), face_ids)
    kept = table.filter(pa.array(keep))
    return sorted_face_subjects(kept.column("face_id"), kept.column("subject_id").cast(pa.string()))


@dataclass(frozen=True)
class FaceSubjects:
    """A generation's face_id -> subject_id lookup, as the search tasks hold it."""

    face_ids: np.ndarray  # sorted int64
    codes: np.ndarray  # int32 index into `subjects`, -1: no subject
    subjects: pa.Array  # string

    @classmethod
    def of(cls, table: pa.Table) -> FaceSubjects:
        column = table.column("subject_id").combine_chunks()
        codes = column.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        return cls(table.column("face_id").to_numpy(), codes, column.dictionary)

    def lookup(self, face_ids: np.ndarray) -> pa.Array:
        """The subject_id of each face (null for a face without one, or not in this generation).

        >>> fs = FaceSubjects.of(sorted_face_subjects(pa.array([2, 5, 7]), pa.array(["a", None, "b"])))
        >>> fs.lookup(np.array([7, 5, 3, 2])).to_pylist()
        ['b', None, None, 'a']
        """
        if len(self.face_ids) == 0:
            return pa.nulls(len(face_ids), pa.string())
        at = np.minimum(np.searchsorted(self.face_ids, face_ids), len(self.face_ids) - 1)
        codes = np.where(self.face_ids[at] == face_ids, self.codes[at], -1)
        indices = pa.array(codes, pa.int32(), mask=codes < 0)
        return pc.take(self.subjects, indices)


_LOADED: dict[tuple[str, str], FaceSubjects] = {}


def load_face_subjects(directory: AnyPath | str, manifest: Manifest) -> FaceSubjects:
    """The generation's lookup, checked against the manifest's sha256, once per Python worker."""
    if not manifest.face_subjects_file or not manifest.face_subjects_sha256:
        raise ValueError("this index generation keeps no face_subjects file")
    return load_once(_LOADED, directory, manifest.face_subjects_file, manifest.face_subjects_sha256, _parse)


def _parse(data: bytes) -> FaceSubjects:
    return FaceSubjects.of(read_face_subjects_bytes(data))
