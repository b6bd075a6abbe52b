"""Index shards on disk: write (temp name, then rename), hash, load with sha256 checks, search and merge.

Every shard holds the same trained index with a disjoint set of face_ids (`face_id % shards == shard`),
added with `add_with_ids`, so a search runs on each shard and the per-shard top-k lists merge into the
global top-k. Removed face_ids (rows deleted from the faces table since the build) are filtered out at
search time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from jobs.common.errors import UserError

MANIFEST = "manifest.json"


class IndexError_(UserError):
    """A missing, tampered or inconsistent index."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    scratch = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    scratch.write_bytes(data)
    os.replace(scratch, path)


def serialize(index) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes):
    import faiss

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def merge_top_k(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (queries x k_s) results into the global top-k by score (inner product: larger is
    better); missing entries (id -1) sort last. Ties are broken by smaller face_id, so results are stable."""
    all_scores = np.concatenate(scores, axis=1)
    all_ids = np.concatenate(ids, axis=1)
    masked = np.where(all_ids < 0, -np.inf, all_scores)
    order = np.lexsort((all_ids, -masked), axis=1)[:, :k]
    return np.take_along_axis(masked, order, axis=1), np.take_along_axis(all_ids, order, axis=1)


@dataclass
class ShardedIndex:
    """Loaded shards plus what the manifest says about them."""

    directory: Path
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
        """Top-k (scores, face_ids) over all shards; removed ids never appear."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        extra = min(len(self.removed), 4 * k)
        scores, ids = [], []
        for shard in self.shards:
            if shard.ntotal == 0:
                continue
            found_scores, found_ids = shard.search(queries, min(k + extra, shard.ntotal))
            if len(self.removed):
                gone = np.isin(found_ids, self.removed)
                found_ids = np.where(gone, -1, found_ids)
            scores.append(found_scores)
            ids.append(found_ids)
        if not scores:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        merged_scores, merged_ids = merge_top_k(scores, ids, k)
        if merged_ids.shape[1] < k:
            pad = k - merged_ids.shape[1]
            merged_scores = np.pad(merged_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            merged_ids = np.pad(merged_ids, ((0, 0), (0, pad)), constant_values=-1)
        return merged_scores, merged_ids


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


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest, checked against the fields readers use; `IndexError_` naming the file otherwise."""
    path = directory / MANIFEST
    if not path.is_file():
        raise IndexError_(f"{directory} is not a Lineup index (no {MANIFEST}); build one with `lineup index`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        _Manifest.model_validate(manifest)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexError_(f"{path} is not valid JSON ({error}); rebuild the index") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in error.errors()[:5])
        raise IndexError_(f"{path} is not a Lineup index manifest ({problems}); rebuild the index") from None
    named = [entry["file"] for entry in manifest["shards"]] + [manifest.get("removed_file") or "x"]
    if any(not _is_plain_name(name) for name in named):
        raise IndexError_(f"{path} names a file outside the index folder; refusing the index, rebuild it")
    return manifest


def _is_plain_name(name: str) -> bool:
    """A file name inside the folder itself: no separator, not `.`/`..` (a manifest must not reach out)."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def load_index(directory: Path | str) -> ShardedIndex:
    """Load every shard after checking its sha256 against the manifest; refuse any mismatch."""
    directory = Path(directory).expanduser().resolve()
    manifest = read_manifest(directory)
    shards = []
    for entry in manifest["shards"]:
        path = directory / entry["file"]
        if not path.is_file():
            raise IndexError_(f"shard {path} named by {directory / MANIFEST} is missing; rebuild the index")
        data = path.read_bytes()
        if sha256_bytes(data) != entry["sha256"]:
            raise IndexError_(f"shard {path} fails its sha256 check against {directory / MANIFEST}; refusing the index")
        shard = deserialize(data)
        if shard.ntotal != entry["vectors"]:
            raise IndexError_(f"shard {path} holds {shard.ntotal} vectors, the manifest says {entry['vectors']}")
        shards.append(shard)
    removed = np.zeros(0, np.int64)
    if manifest.get("removed_file"):
        removed_path = directory / manifest["removed_file"]
        data = removed_path.read_bytes()
        if sha256_bytes(data) != manifest["removed_sha256"]:
            raise IndexError_(f"{removed_path} fails its sha256 check; refusing the index")
        removed = np.sort(np.frombuffer(data, dtype=np.int64))
    index = ShardedIndex(directory, manifest, shards, removed)
    index.set_search_param(manifest.get("search_value"))
    return index


def verify_index(directory: Path | str) -> dict[str, Any]:
    """The manifest, after checking that every file it names exists and matches its sha256 (nothing is
    deserialized: the driver of a query job needs the check, not the vectors)."""
    from jobs.common.hashing import sha256_file

    directory = Path(directory).expanduser().resolve()
    manifest = read_manifest(directory)
    named = [(entry["file"], entry["sha256"]) for entry in manifest["shards"]]
    if manifest.get("removed_file"):
        named.append((manifest["removed_file"], manifest["removed_sha256"]))
    for name, expected in named:
        path = directory / name
        if not path.is_file():
            raise IndexError_(
                f"{path} named by {directory / MANIFEST} is missing; rebuild the index with `lineup index`"
            )
        if sha256_file(path) != expected:
            raise IndexError_(f"{path} fails its sha256 check against {directory / MANIFEST}; refusing the index")
    return manifest


_LOADED_SHARDS: dict[tuple[str, str, int | None], Any] = {}


def load_shard(directory: str, entry: dict[str, Any], search_param: str | None, search_value: int | None):
    """One shard, loaded once per Python worker process (keyed by path and sha256) and checked on load."""
    import faiss

    key = (str(Path(directory) / entry["file"]), entry["sha256"], search_value)
    if key not in _LOADED_SHARDS:
        if len(_LOADED_SHARDS) >= 64:  # a long-lived worker that served many indexes: start over
            _LOADED_SHARDS.clear()
        data = Path(key[0]).read_bytes()
        if sha256_bytes(data) != entry["sha256"]:
            raise IndexError_(f"shard {key[0]} changed during the run (sha256 mismatch); refusing it")
        shard = deserialize(data)
        if search_param is not None and search_value is not None:
            faiss.ParameterSpace().set_index_parameter(shard, search_param, search_value)
        _LOADED_SHARDS[key] = shard
    return _LOADED_SHARDS[key]


def load_removed(directory: str, manifest: dict[str, Any]) -> np.ndarray:
    if not manifest.get("removed_file"):
        return np.zeros(0, np.int64)
    data = (Path(directory) / manifest["removed_file"]).read_bytes()
    if sha256_bytes(data) != manifest["removed_sha256"]:
        raise IndexError_(f"{manifest['removed_file']} in {directory} fails its sha256 check; refusing the index")
    return np.sort(np.frombuffer(data, dtype=np.int64))
