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

import datetime as dt
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from jobs.common import storage
from jobs.common.errors import TransientError, UserError
from jobs.common.hashing import sha256_file
from jobs.common.storage import AnyPath
from jobs.shards.search import pad_to_k, search_shards

MANIFEST = "manifest.json"


class IndexFileError(UserError):
    """A missing, tampered or inconsistent index."""


class IndexChangedError(TransientError):
    """A file of the generation a reader pinned is gone because a newer generation was published and
    the old one purged (an erasure purges at once): a rerun reads the new generation."""


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


write_atomically = storage.write_atomically


def write_manifest(directory: AnyPath, manifest: dict[str, Any]) -> None:
    """The commit point of an index: every file it names is written before it."""
    write_atomically(directory / MANIFEST, json.dumps(manifest, indent=2).encode("utf-8"))


def named_files(manifest: dict[str, Any]) -> set[str]:
    """The shard and removed-ids files a manifest names."""
    return {entry["file"] for entry in manifest["shards"]} | ({manifest["removed_file"]} - {None})


def publish(directory: AnyPath, manifest: dict[str, Any], previous: dict[str, Any] | None) -> None:
    """Write `manifest` as the index's new generation (the commit point: call it only once everything it
    states is measured). Files of `previous` it no longer names are kept for readers still on that
    generation and listed under `superseded` with the time, for `vacuum` to remove after the retention."""
    now = dt.datetime.now(dt.UTC)
    manifest["generation"] = time.time_ns() // 1_000_000
    superseded = list(previous.get("superseded", [])) if previous else []
    if previous is not None:
        gone = sorted(named_files(previous) - named_files(manifest))
        if gone:
            superseded.append(
                {"generation": previous.get("generation"), "files": gone, "superseded_at": now.isoformat()}
            )
    keep = named_files(manifest)
    manifest["superseded"] = [{**entry, "files": [f for f in entry["files"] if f not in keep]} for entry in superseded]
    manifest["superseded"] = [entry for entry in manifest["superseded"] if entry["files"]]
    write_manifest(directory, manifest)


def vacuum(directory: AnyPath, retention_hours: float) -> list[str]:
    """Remove superseded generations' files older than `retention_hours`, and files no manifest ever
    named (a killed build's) last modified before it; the names removed. A reader that pinned a
    removed generation then exits 3 (rerun), never reads a partial index."""
    manifest = read_manifest(directory)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=retention_hours)
    keep, removed, kept_entries = named_files(manifest), [], []
    for entry in manifest.get("superseded", []):
        if dt.datetime.fromisoformat(entry["superseded_at"]) <= cutoff:
            removed += [f for f in entry["files"] if f not in keep]
        else:
            kept_entries.append(entry)
    listed = {f for entry in manifest.get("superseded", []) for f in entry["files"]}
    for path in storage.upath(directory).iterdir():
        if path.name in keep or path.name in listed or path.suffix not in (".faiss", ".bin"):
            continue
        modified = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        if modified <= cutoff:
            removed.append(path.name)
    for name in removed:
        (storage.upath(directory) / name).unlink(missing_ok=True)
    if len(kept_entries) != len(manifest.get("superseded", [])):
        manifest["superseded"] = kept_entries
        write_manifest(directory, manifest)  # the same generation: only its list of old files changed
    return sorted(removed)


def serialize(index) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes):
    import faiss

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


@dataclass
class ShardedIndex:
    """Loaded shards plus what the manifest says about them."""

    directory: AnyPath
    manifest: dict[str, Any]
    shards: list[Any]
    removed: np.ndarray  # sorted face_ids to exclude

    def set_search_param(self, value: int | None) -> None:
        import faiss

        name = self.manifest["search_param"]
        if name is None or value is None:
            return
        for shard in self.shards:
            faiss.ParameterSpace().set_index_parameter(shard, name, value)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, face_ids) over all shards, k columns (-inf / -1 where fewer); removed ids never
        appear. The same code the query job's executors run."""
        return pad_to_k(*search_shards(self.shards, self.removed, queries, k), k)


class _ShardEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    shard: int
    file: str
    sha256: str
    vectors: int


class _Manifest(BaseModel):
    """What readers rely on; the index job writes more (recall, build time, ...), kept as is."""

    model_config = ConfigDict(extra="allow")

    index_id: str
    model_id: str
    dim: int
    metric: str
    faces_table: str
    faces_version: int
    vectors: int
    exact: bool
    search_param: str | None
    shards: list[_ShardEntry]
    removed_file: str | None = None
    removed_sha256: str | None = None


def read_manifest(directory: AnyPath) -> dict[str, Any]:
    """The manifest, checked against the fields readers use; `IndexFileError` naming the file otherwise."""
    path = storage.upath(directory) / MANIFEST
    if not path.is_file():
        raise IndexFileError(f"{directory} is not a Lineup index (no {MANIFEST}); build one with `lineup index`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        _Manifest.model_validate(manifest)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFileError(f"{path} is not valid JSON ({error}); rebuild the index") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in error.errors()[:5])
        raise IndexFileError(f"{path} is not a Lineup index manifest ({problems}); rebuild the index") from None
    named = [entry["file"] for entry in manifest["shards"]] + [manifest.get("removed_file") or "x"]
    if any(not _is_plain_name(name) for name in named):
        raise IndexFileError(f"{path} names a file outside the index folder; refusing the index, rebuild it")
    return manifest


def _is_plain_name(name: str) -> bool:
    """A file name inside the folder itself: no separator, not `.`/`..` (a manifest must not reach out)."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


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
        return name not in named_files(read_manifest(storage.upath(directory)))
    except IndexFileError:
        return False


def load_removed(directory: AnyPath | str, manifest: dict[str, Any]) -> np.ndarray:
    """The sorted face_ids searches must skip (rows removed from the faces table since the build)."""
    if not manifest.get("removed_file"):
        return np.zeros(0, np.int64)
    data = checked_file(directory, manifest["removed_file"], manifest["removed_sha256"])
    return np.sort(np.frombuffer(data, dtype=np.int64))


def load_index(directory: AnyPath | str, manifest: dict[str, Any] | None = None) -> ShardedIndex:
    """Load every shard after checking its sha256 against the manifest (the published one, or a
    `manifest` not yet published: the index job measures recall before it commits); refuse any mismatch."""
    directory = _directory(directory)
    manifest = read_manifest(directory) if manifest is None else manifest
    shards = []
    for entry in manifest["shards"]:
        shard = deserialize(checked_file(directory, entry["file"], entry["sha256"]))
        if shard.ntotal != entry["vectors"]:
            raise IndexFileError(
                f"shard {entry['file']} holds {shard.ntotal} vectors, the manifest says {entry['vectors']}"
            )
        shards.append(shard)
    index = ShardedIndex(directory, manifest, shards, load_removed(directory, manifest))
    index.set_search_param(manifest.get("search_value"))
    return index


def verify_index(directory: AnyPath | str) -> dict[str, Any]:
    """The manifest, after checking that every file it names exists and matches its sha256 (nothing is
    deserialized: the driver of a query job needs the check, not the vectors)."""
    directory = _directory(directory)
    manifest = read_manifest(directory)
    named = [(entry["file"], entry["sha256"]) for entry in manifest["shards"]]
    if manifest.get("removed_file"):
        named.append((manifest["removed_file"], manifest["removed_sha256"]))
    for name, expected in named:
        checked_file(directory, name, expected, keep_bytes=False)
    return manifest


def _directory(directory: AnyPath | str) -> AnyPath:
    path = storage.upath(directory)
    return path if storage.is_remote(str(path)) else Path(str(path)).expanduser().resolve()


_LOADED_SHARDS: dict[tuple[str, str, int | None], Any] = {}


def load_shard(directory: str, entry: dict[str, Any], search_param: str | None, search_value: int | None):
    """One shard, loaded once per Python worker process (keyed by path and sha256) and checked on load."""
    import faiss

    key = (str(storage.upath(directory) / entry["file"]), entry["sha256"], search_value)
    if key not in _LOADED_SHARDS:
        if len(_LOADED_SHARDS) >= 64:  # a long-lived worker that served many indexes: start over
            _LOADED_SHARDS.clear()
        shard = deserialize(checked_file(directory, entry["file"], entry["sha256"]))
        if search_param is not None and search_value is not None:
            faiss.ParameterSpace().set_index_parameter(shard, search_param, search_value)
        _LOADED_SHARDS[key] = shard
    return _LOADED_SHARDS[key]
