"""Erasing vectors from an index: each shard that holds an erased face_id is rewritten without it (FAISS
`remove_ids`), under a new name, and a new generation is published (the commit point); then every file
of an older generation that holds an erased id is deleted at once, whatever the index's retention. A
removed-ids list alone is not erasure: the vectors would still be in the file.
Rerunning after a crash finds nothing left to remove in shards already rewritten, so it converges."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jobs.common.errors import UserError
from jobs.common.storage import AnyPath, upath
from jobs.forget.verify import shard_contents
from jobs.shards.build import remove_from_shard
from jobs.shards.face_subjects import (
    is_face_subjects_file,
    read_face_subjects_bytes,
    without_faces,
    write_face_subjects,
)
from jobs.shards.files import checked_file, deserialize, serialize, sha256_bytes, write_atomically
from jobs.shards.generations import publish, without_files
from jobs.shards.manifest import Manifest, read_manifest, write_manifest


def erase_from_index(
    index_dir: AnyPath,
    face_ids: set[int],
    erasure_id: str,
    table_versions: dict[str, tuple[int, int]],
    rebuild_templates: Callable[[Manifest, int], None] | None = None,
) -> dict[str, Any]:
    """Remove `face_ids` from every shard of the index at `index_dir`; counts of what was removed.

    `table_versions` maps each faces table to its (before, after) versions of this erasure: an index that
    pinned the version before now pins the one after (the same rows less the person's), because a purge
    deletes the files of the old version and nothing could read it any more. An index with identity
    templates gets them computed again from that version (`rebuild_templates`): a template is the
    person's faces averaged, and must not outlive them."""

    manifest = read_manifest(index_dir)
    previous = manifest.model_copy(deep=True)
    wanted = np.array(sorted(face_ids), dtype=np.int64)
    generation = int(time.time() * 1000)
    removed_vectors = 0
    for entry in manifest.shards:
        shard = deserialize(checked_file(index_dir, entry.file, entry.sha256))
        try:
            gone = remove_from_shard(shard, wanted)
        except RuntimeError as error:  # e.g. HNSW: FAISS cannot remove from it
            raise UserError(
                f"index {index_dir} ({manifest.factory}) cannot remove vectors ({error}); rebuild it with "
                "`lineup index` after this erasure, then rerun `lineup forget` to verify"
            ) from None
        if gone:
            data = serialize(shard)
            name = f"shard-{entry.shard:04d}.e{generation}.faiss"
            write_atomically(index_dir / name, data)
            entry.file, entry.sha256, entry.vectors = name, sha256_bytes(data), int(shard.ntotal)
            removed_vectors += gone
    removed_list = _drop_from_removed_list(index_dir, manifest, wanted, generation)
    subjects_rewritten = _drop_from_face_subjects(index_dir, manifest, wanted, generation)
    repinned = _repin(manifest, table_versions)
    changed = bool(removed_vectors or removed_list or subjects_rewritten or repinned)
    if changed and manifest.templates_file and rebuild_templates is not None:
        rebuild_templates(manifest, generation)
    if changed:
        manifest.vectors = sum(entry.vectors for entry in manifest.shards)
        manifest.erasures.append({"erasure_id": erasure_id, "vectors_removed": removed_vectors})
        publish(index_dir, manifest, previous)
    purged = _purge_old_generations(index_dir, wanted, templates_too=changed)
    return {
        "index_dir": str(index_dir),
        "vectors_removed": removed_vectors,
        "removed_list_entries": removed_list,
        "superseded_files_purged": purged,
    }


def _purge_old_generations(index_dir: AnyPath, wanted: np.ndarray, templates_too: bool = False) -> int:
    """Delete at once every file the current manifest does not name that holds an erased face_id
    (superseded generations kept for readers, a killed build's leftovers): the erasure cannot wait for
    the retention. A query still reading such a generation exits 3 and a rerun reads the new one."""

    manifest = read_manifest(index_dir)
    keep, purged = manifest.named_files(), []
    for path in sorted(upath(index_dir).iterdir()):
        if path.name in keep:
            continue
        if path.suffix == ".arrow" and templates_too and not is_face_subjects_file(path.name):
            # an older templates file averages the erased faces in: it goes whatever it holds
            path.unlink()
            purged.append(path.name)
            continue
        if path.suffix == ".faiss":
            ids = shard_contents(Path(str(path)))[0]
        elif path.suffix == ".bin":
            ids = np.frombuffer(path.read_bytes(), dtype=np.int64)
        elif is_face_subjects_file(path.name):
            ids = read_face_subjects_bytes(path.read_bytes()).column("face_id").to_numpy()
        else:
            continue
        if np.isin(ids, wanted).any():
            path.unlink()
            purged.append(path.name)
    if purged:
        manifest.superseded = without_files(manifest.superseded, set(purged))
        write_manifest(index_dir, manifest)  # the same generation: only its list of old files changed
    return len(purged)


def _drop_from_removed_list(index_dir: AnyPath, manifest: Manifest, wanted: np.ndarray, generation: int) -> int:
    """The removed-ids file names face_ids too: the erased ones leave it (it is rewritten, not appended)."""
    if not manifest.removed_file or not manifest.removed_sha256:
        return 0
    data = checked_file(index_dir, manifest.removed_file, manifest.removed_sha256)
    ids = np.frombuffer(data, dtype=np.int64)
    kept = ids[~np.isin(ids, wanted)]
    if len(kept) == len(ids):
        return 0
    name = f"removed.e{generation}.bin"
    write_atomically(index_dir / name, kept.tobytes())
    manifest.removed_file, manifest.removed_sha256, manifest.removed = (
        name,
        sha256_bytes(kept.tobytes()),
        int(len(kept)),
    )
    return int(len(ids) - len(kept))


def _drop_from_face_subjects(index_dir: AnyPath, manifest: Manifest, wanted: np.ndarray, generation: int) -> int:
    """The face_subjects file names the erased faces and their subject: it is rewritten without them."""
    if not manifest.face_subjects_file or not manifest.face_subjects_sha256:
        return 0
    data = checked_file(index_dir, manifest.face_subjects_file, manifest.face_subjects_sha256)
    table = read_face_subjects_bytes(data)
    kept = without_faces(table, wanted)
    if kept.num_rows == table.num_rows:
        return 0
    for key, value in write_face_subjects(index_dir, generation, kept, tag="e").items():
        setattr(manifest, key, value)
    return table.num_rows - kept.num_rows


def _repin(manifest: Manifest, table_versions: dict[str, tuple[int, int]]) -> bool:
    """Move the index's pinned faces version past the erasure. An index that was behind its table (rows
    added since its version) is marked: `index.update` cannot diff against a purged version, so it must be
    rebuilt."""
    versions = table_versions.get(manifest.faces_table)
    if versions is None or versions[0] == versions[1]:
        return False
    before, after = versions
    if manifest.faces_version != before:
        manifest.rebuild_required = (
            f"the faces table moved on after this index's version {manifest.faces_version} and an erasure "
            "rewrote it: rebuild with `lineup index`"
        )
    manifest.faces_version = after
    return True
