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
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from jobs.common import storage
from jobs.common.errors import UserError
from jobs.common.storage import AnyPath
from jobs.index.search import pad_to_k, search_shards

MANIFEST = "manifest.json"


class IndexFileError(UserError):
    """A missing, tampered or inconsistent index."""


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


write_atomically = storage.write_atomically


def write_manifest(directory: AnyPath, manifest: dict[str, Any]) -> None:
    """The commit point of an index: every file it names is written before it."""
    write_atomically(directory / MANIFEST, json.dumps(manifest, indent=2).encode("utf-8"))


def remove_unnamed_files(directory: AnyPath, manifest: dict[str, Any]) -> None:
    """Delete shard and removed-id files the manifest no longer names (only after the manifest swap)."""
    keep = {entry["file"] for entry in manifest["shards"]} | {MANIFEST, manifest.get("removed_file")}
    for path in storage.upath(directory).iterdir():
        if path.is_file() and path.name not in keep and path.suffix in (".faiss", ".bin"):
            path.unlink()


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
    from jobs.common.hashing import sha256_file

    path = storage.upath(directory) / name
    manifest_path = storage.upath(directory) / MANIFEST
    try:
        if keep_bytes:
            source = storage.cached_copy(path, expected_sha256) if storage.is_remote(path) else path
            data = source.read_bytes() if source is not None else b""  # None: the downloaded bytes differ
            digest = sha256_bytes(data)
        else:
            data, digest = b"", sha256_file(path)
    except FileNotFoundError:
        raise IndexFileError(
            f"{path} named by {manifest_path} is missing; rebuild the index (`lineup index`)"
        ) from None
    if digest != expected_sha256:
        raise IndexFileError(f"{path} fails its sha256 check against {manifest_path}; refusing the index")
    return data


def load_removed(directory: AnyPath | str, manifest: dict[str, Any]) -> np.ndarray:
    """The sorted face_ids searches must skip (rows removed from the faces table since the build)."""
    if not manifest.get("removed_file"):
        return np.zeros(0, np.int64)
    data = checked_file(directory, manifest["removed_file"], manifest["removed_sha256"])
    return np.sort(np.frombuffer(data, dtype=np.int64))


def load_index(directory: AnyPath | str) -> ShardedIndex:
    """Load every shard after checking its sha256 against the manifest; refuse any mismatch."""
    directory = _directory(directory)
    manifest = read_manifest(directory)
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
