"""Proof of an erasure: every Parquet data file under each table folder (referenced by the current
version or only by history) and every shard file of each index is read raw, and searched for the erased
face ids (every id column) and the erased embeddings (exact float match, by sha256 of the float32 bytes).
Works from digests only, so a later `--verify` needs nothing of the person but what the erasure record
kept (sha256 of each face id and embedding)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.common.erasures import id_digest
from jobs.forget.plan import embedding_digest
from jobs.shards.face_subjects import is_face_subjects_file, read_face_subjects_bytes
from jobs.shards.files import deserialize

if TYPE_CHECKING:
    import pyarrow as pa

ID_COLUMNS = ("face_id", "probe_face_id", "gallery_face_id", "best_gallery_face_id", "a_face_id", "b_face_id")


@dataclass
class Findings:
    """Files that still hold erased data, by where they are."""

    current: list[str] = field(default_factory=list)  # files the table's current version reads
    history: list[str] = field(default_factory=list)  # files only older versions read (gone after a purge)
    shards: list[str] = field(default_factory=list)
    files_scanned: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "files_scanned": self.files_scanned,
            "current_files_with_erased_data": self.current,
            "history_files_with_erased_data": self.history,
            "shards_with_erased_data": self.shards,
        }


def scan_table(
    table_dir: Path, current_files: set[str], id_digests: set[str], vector_digests: set[str], found: Findings
) -> None:
    """Every data file under the table folder (not `_delta_log`), current or not."""
    import pyarrow.parquet as pq

    for path in sorted(table_dir.rglob("*.parquet")):
        if "_delta_log" in path.parts:
            continue
        try:
            table = pq.read_table(path)
        except FileNotFoundError:  # a concurrent writer's file, dropped since the listing: it holds nothing
            continue
        found.files_scanned += 1
        if _holds(table, id_digests, vector_digests):
            (found.current if str(path.resolve()) in current_files else found.history).append(str(path))


def _holds(table: pa.Table, id_digests: set[str], vector_digests: set[str]) -> bool:
    for column in ID_COLUMNS:
        if column in table.column_names:
            values = table.column(column).to_pylist()
            if any(v is not None and id_digest(v) in id_digests for v in values):
                return True
    if "embedding" in table.column_names and vector_digests:
        for vector in table.column("embedding").to_pylist():
            if vector is not None and embedding_digest(vector) in vector_digests:
                return True
    return False


def scan_index(index_dir: Path, id_digests: set[str], vector_digests: set[str], found: Findings) -> None:
    """Every `.faiss` file in the folder, named by the manifest or not: its ids, and its stored vectors
    where the index keeps them whole (flat, IVF-Flat); PQ codes are not vectors, their ids are checked."""
    for path in sorted(index_dir.glob("*.faiss")):
        try:
            ids, vectors = shard_contents(path)
        except FileNotFoundError:  # a superseded generation removed since the listing
            continue
        found.files_scanned += 1
        if any(id_digest(int(i)) in id_digests for i in ids) or any(
            embedding_digest(v) in vector_digests for v in vectors
        ):
            found.shards.append(str(path))
    id_lists = [(path, np.frombuffer(path.read_bytes(), dtype=np.int64)) for path in sorted(index_dir.glob("*.bin"))]
    id_lists += [  # the face -> subject lookups
        (path, read_face_subjects_bytes(path.read_bytes()).column("face_id").to_numpy())
        for path in sorted(index_dir.glob("*.arrow"))
        if is_face_subjects_file(path.name)
    ]
    for path, ids in id_lists:  # removed-ids lists and face -> subject lookups
        found.files_scanned += 1
        if any(id_digest(int(i)) in id_digests for i in ids):
            found.shards.append(str(path))


def shard_contents(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, whole vectors) a serialized FAISS index holds."""
    import faiss

    index = deserialize(path.read_bytes())
    if isinstance(index, faiss.IndexIDMap2 | faiss.IndexIDMap):
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexRefine):  # its full vectors are the refine index's
            inner = faiss.downcast_index(inner.refine_index)
        vectors = inner.reconstruct_n(0, inner.ntotal) if isinstance(inner, faiss.IndexFlat) else np.zeros((0, 0))
        return ids, vectors
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    if lists is None:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    all_ids, all_vectors = [], []
    whole = isinstance(ivf, faiss.IndexIVFFlat)
    for number in range(ivf.nlist):
        size = lists.list_size(number)
        if not size:
            continue
        all_ids.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
        if whole:
            codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).copy()
            all_vectors.append(codes.view(np.float32).reshape(size, -1))
    ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
    return ids, (np.concatenate(all_vectors) if all_vectors else np.zeros((0, 0), np.float32))
