"""Erasing vectors from an index: each shard that holds an erased face_id is rewritten without it (FAISS
`remove_ids`), under a new name, and a new manifest is published (the commit point); files no manifest
names are then deleted. A removed-ids list alone is not erasure: the vectors would still be in the file.
Rerunning after a crash finds nothing left to remove in shards already rewritten, so it converges."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from jobs.common.errors import UserError
from jobs.common.storage import AnyPath
from jobs.index.build import remove_from_shard
from jobs.index.shards import (
    checked_file,
    deserialize,
    read_manifest,
    remove_unnamed_files,
    serialize,
    sha256_bytes,
    write_atomically,
    write_manifest,
)


def erase_from_index(
    index_dir: AnyPath, face_ids: set[int], erasure_id: str, table_versions: dict[str, tuple[int, int]]
) -> dict[str, Any]:
    """Remove `face_ids` from every shard of the index at `index_dir`; counts of what was removed.

    `table_versions` maps each faces table to its (before, after) versions of this erasure: an index that
    pinned the version before now pins the one after (the same rows less the person's), because a purge
    deletes the files of the old version and nothing could read it any more."""

    manifest = read_manifest(index_dir)
    wanted = np.array(sorted(face_ids), dtype=np.int64)
    generation = int(time.time() * 1000)
    removed_vectors = 0
    for entry in manifest["shards"]:
        shard = deserialize(checked_file(index_dir, entry["file"], entry["sha256"]))
        try:
            gone = remove_from_shard(shard, wanted)
        except RuntimeError as error:  # e.g. HNSW: FAISS cannot remove from it
            raise UserError(
                f"index {index_dir} ({manifest.get('factory')}) cannot remove vectors ({error}); rebuild it with "
                "`lineup index` after this erasure, then rerun `lineup forget` to verify"
            ) from None
        if gone:
            data = serialize(shard)
            name = f"shard-{entry['shard']:04d}.e{generation}.faiss"
            write_atomically(index_dir / name, data)
            entry.update(file=name, sha256=sha256_bytes(data), vectors=int(shard.ntotal))
            removed_vectors += gone
    removed_list = _drop_from_removed_list(index_dir, manifest, wanted, generation)
    repinned = _repin(manifest, table_versions)
    if removed_vectors or removed_list or repinned:
        manifest["vectors"] = sum(entry["vectors"] for entry in manifest["shards"])
        manifest.setdefault("erasures", []).append({"erasure_id": erasure_id, "vectors_removed": removed_vectors})
        write_manifest(index_dir, manifest)
    remove_unnamed_files(index_dir, manifest)
    return {"index_dir": str(index_dir), "vectors_removed": removed_vectors, "removed_list_entries": removed_list}


def _drop_from_removed_list(index_dir: AnyPath, manifest: dict[str, Any], wanted: np.ndarray, generation: int) -> int:
    """The removed-ids file names face_ids too: the erased ones leave it (it is rewritten, not appended)."""
    if not manifest.get("removed_file"):
        return 0
    data = checked_file(index_dir, manifest["removed_file"], manifest["removed_sha256"])
    ids = np.frombuffer(data, dtype=np.int64)
    kept = ids[~np.isin(ids, wanted)]
    if len(kept) == len(ids):
        return 0
    name = f"removed.e{generation}.bin"
    write_atomically(index_dir / name, kept.tobytes())
    manifest.update(removed_file=name, removed_sha256=sha256_bytes(kept.tobytes()), removed=int(len(kept)))
    return int(len(ids) - len(kept))


def _repin(manifest: dict[str, Any], table_versions: dict[str, tuple[int, int]]) -> bool:
    """Move the index's pinned faces version past the erasure. An index that was behind its table (rows
    added since its version) is marked: `index.update` cannot diff against a purged version, so it must be
    rebuilt."""
    versions = table_versions.get(manifest["faces_table"])
    if versions is None or versions[0] == versions[1]:
        return False
    before, after = versions
    if manifest["faces_version"] != before:
        manifest["rebuild_required"] = (
            f"the faces table moved on after this index's version {manifest['faces_version']} and an erasure "
            "rewrote it: rebuild with `lineup index`"
        )
    manifest["faces_version"] = after
    return True
