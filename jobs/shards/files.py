"""Index shards at any location: write, hash, load with sha256 checks, search and merge.

Object stores have no atomic rename, so a build never overwrites: shard and removed-id files get new
names each generation, and the manifest, written last, is the commit point. Readers verify every file
against the manifest's sha256; executors keep downloaded shards in a local cache keyed by sha256.

Every shard holds the same trained index with a disjoint set of face_ids (`face_id % shards == shard`),
added with `add_with_ids`, so a search runs on each shard and the per-shard top-k lists merge into the
global top-k. Removed face_ids (rows deleted from the faces table since the build) are filtered out at
search time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.common import storage
from jobs.common.hashing import sha256_file
from jobs.common.storage import AnyPath
from jobs.shards.manifest import MANIFEST, IndexChangedError, IndexFileError, Manifest, ShardEntry, read_manifest
from jobs.shards.search import pad_to_k, search_shards


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


write_atomically = storage.write_atomically


def serialize(index: Any) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes) -> Any:  # a faiss.Index
    import faiss

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


@dataclass
class ShardedIndex:
    """Loaded shards plus what the manifest says about them."""

    directory: AnyPath
    manifest: Manifest
    shards: list[Any]
    removed: np.ndarray  # sorted face_ids to exclude

    def set_search_param(self, value: int | None) -> None:
        import faiss

        name = self.manifest.search_param
        if name is None or value is None:
            return
        for shard in self.shards:
            faiss.ParameterSpace().set_index_parameter(shard, name, value)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, face_ids) over all shards, k columns (-inf / -1 where fewer); removed ids never
        appear. The same code the query job's executors run."""
        return pad_to_k(*search_shards(self.shards, self.removed, queries, k), k)


def checked_file(directory: AnyPath | str, name: str, expected_sha256: str, keep_bytes: bool = True) -> bytes:
    """A file named by the manifest, checked against its sha256: the one place an index file is trusted.
    Returns its bytes, or b"" when `keep_bytes` is false (the hash is then streamed: a driver that only
    verifies never holds a shard). `IndexFileError` naming the file when it is missing or differs."""

    path = storage.upath(directory) / name
    manifest_path = storage.upath(directory) / MANIFEST
    if not storage.is_remote(str(path)) and os.path.lexists(str(path)) and not _regular_file_inside(path):
        raise IndexFileError(
            f"{path} named by {manifest_path} is a link or not a regular file inside the index folder; "
            "refusing the index: rebuild it with `lineup index`"
        )
    try:
        if keep_bytes:
            source = storage.cached_copy(path, expected_sha256) if storage.is_remote(path) else path
            data = source.read_bytes() if source is not None else b""  # None: the downloaded bytes differ
            digest = sha256_bytes(data)
        else:
            data, digest = b"", sha256_file(path)
    except FileNotFoundError:
        raise _missing(directory, name) from None
    if digest != expected_sha256:
        raise IndexFileError(f"{path} fails its sha256 check against {manifest_path}; refusing the index")
    return data


def write_arrow_file(directory: AnyPath, name: str, table: Any, schema: Any) -> str:
    """A generation's side file as one Arrow IPC file (a pyarrow Table cast to `schema`), written under
    a new name; its sha256 for the manifest."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        writer.write_table(table.cast(schema))
    data = sink.getvalue().to_pybytes()
    write_atomically(directory / name, data)
    return sha256_bytes(data)


def load_once(
    cache: dict[tuple[str, str], Any], directory: AnyPath | str, name: str, sha256: str, parse: Any, limit: int = 8
) -> Any:
    """`parse` of a file the manifest names, checked against its sha256 once per process (a Python worker
    keeps it for later tasks); `cache` maps (path, sha256) to what `parse` returned, `limit` entries at most."""
    key = (f"{directory}/{name}", sha256)
    if key not in cache:
        if len(cache) >= limit:  # a long-lived worker that served many generations: start over
            cache.clear()
        cache[key] = parse(checked_file(directory, name, sha256))
    return cache[key]


def file_size(directory: AnyPath | str, name: str) -> int:
    """The size of an index file named by the pinned manifest (`IndexChangedError` when a newer
    generation replaced and removed it)."""
    try:
        return int((storage.upath(directory) / name).stat().st_size)
    except FileNotFoundError:
        raise _missing(directory, name) from None


def _missing(directory: AnyPath | str, name: str) -> IndexFileError | IndexChangedError:
    """Why a file the pinned manifest names is gone: a newer generation replaced it and was purged (a
    rerun reads that one: exit 3), or the index is broken (exit 2)."""
    if _superseded(directory, name):
        return IndexChangedError(
            f"the index at {directory} changed while this job read it (a newer generation was published "
            "and the one this job pinned was removed); rerun to use the new one"
        )
    return IndexFileError(
        f"{storage.upath(directory) / name} named by {storage.upath(directory) / MANIFEST} is missing; rebuild "
        "the index (`lineup index`)"
    )


def _regular_file_inside(path: AnyPath) -> bool:
    """A regular file (not a link) whose real location is the index folder itself."""
    local = Path(str(path))
    return not local.is_symlink() and local.is_file() and local.resolve().parent == local.parent.resolve()


def _superseded(directory: AnyPath | str, name: str) -> bool:
    """Whether the index's current manifest no longer names file `name` (a newer generation replaced it)."""
    try:
        return name not in read_manifest(storage.upath(directory)).named_files()
    except IndexFileError:
        return False


def load_removed(directory: AnyPath | str, manifest: Manifest) -> np.ndarray:
    """The sorted face_ids searches must skip (rows removed from the faces table since the build)."""
    if not manifest.removed_file or not manifest.removed_sha256:
        return np.zeros(0, np.int64)
    data = checked_file(directory, manifest.removed_file, manifest.removed_sha256)
    return np.sort(np.frombuffer(data, dtype=np.int64))


def load_index(directory: AnyPath | str, manifest: Manifest | None = None) -> ShardedIndex:
    """Load every shard after checking its sha256 against the manifest (the published one, or a
    `manifest` not yet published: the index job measures recall before it commits); refuse any mismatch."""
    directory = _directory(directory)
    manifest = read_manifest(directory) if manifest is None else manifest
    shards = []
    for entry in manifest.shards:
        shard = deserialize(checked_file(directory, entry.file, entry.sha256))
        if shard.ntotal != entry.vectors:
            raise IndexFileError(f"shard {entry.file} holds {shard.ntotal} vectors, the manifest says {entry.vectors}")
        shards.append(shard)
    index = ShardedIndex(directory, manifest, shards, load_removed(directory, manifest))
    index.set_search_param(manifest.search_value)
    return index


def verify_index(directory: AnyPath | str) -> Manifest:
    """The manifest, after checking that every file it names exists and matches its sha256 (nothing is
    deserialized: the driver of a query job needs the check, not the vectors)."""
    directory = _directory(directory)
    manifest = read_manifest(directory)
    for name, expected in manifest.checked_files():
        checked_file(directory, name, expected, keep_bytes=False)
    return manifest


def _directory(directory: AnyPath | str) -> AnyPath:
    path = storage.upath(directory)
    return path if storage.is_remote(str(path)) else Path(str(path)).expanduser().resolve()


_LOADED_SHARDS: dict[tuple[str, str, int | None], Any] = {}


def load_shard(directory: str, entry: ShardEntry, search_param: str | None, search_value: int | None) -> Any:
    """One shard, loaded once per Python worker process (keyed by path and sha256) and checked on load."""
    import faiss

    key = (str(storage.upath(directory) / entry.file), entry.sha256, search_value)
    if key not in _LOADED_SHARDS:
        if len(_LOADED_SHARDS) >= 64:  # a long-lived worker that served many indexes: start over
            _LOADED_SHARDS.clear()
        shard = deserialize(checked_file(directory, entry.file, entry.sha256))
        if search_param is not None and search_value is not None:
            faiss.ParameterSpace().set_index_parameter(shard, search_param, search_value)
        _LOADED_SHARDS[key] = shard
    return _LOADED_SHARDS[key]
