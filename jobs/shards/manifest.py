"""An index's manifest, typed: what every reader relies on, validated once where it is read.

The manifest is the commit point of an index generation (`jobs.shards.generations.publish`): it names
every shard and removed-ids file with its sha256, and states what was measured (recall, the tuned search
setting). Keys a newer Lineup writes survive a rewrite by this one (`extra="allow"`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.common import storage
from jobs.common.errors import TransientError, UserError
from jobs.common.storage import AnyPath

MANIFEST = "manifest.json"


class IndexFileError(UserError):
    """A missing, tampered or inconsistent index."""


class IndexChangedError(TransientError):
    """A file of the generation a reader pinned is gone because a newer generation was published and
    the old one purged (an erasure purges at once): a rerun reads the new generation."""


class ShardEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    shard: int
    file: str
    sha256: str
    vectors: int
    shard_key: str | None = None
    min_id: int | None = None
    max_id: int | None = None


class Superseded(BaseModel):
    """An older generation's files a newer one no longer names, kept for readers still on it."""

    generation: int | None = None
    files: list[str]
    superseded_at: str


class Manifest(BaseModel):
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
    shards: list[ShardEntry]
    built_version: int | None = None
    factory: str | None = None
    choice_reason: str | None = None
    search_candidates: list[int] = Field(default_factory=list)
    search_value: int | None = None
    shard_count: int | None = None
    vectors_at_build: int = 0
    added_since_build: int = 0
    removed_file: str | None = None
    removed_sha256: str | None = None
    removed: int = 0
    created_at: str | None = None
    generation: int | None = None
    superseded: list[Superseded] = Field(default_factory=list)
    rebuild_required: str | None = None
    erasures: list[dict[str, Any]] = Field(default_factory=list)  # erasure_id, vectors_removed
    build_s: float | None = None
    recall_at_k: float | None = None
    recall_k: int | None = None
    recall_floor: float | None = None
    recall_queries: int | None = None
    recall_tried: list[Any] | None = None
    quality_filter: str | None = None  # the level whose floor kept faces out (None: every face indexed)
    quality_floor: float | None = None
    faces_below_quality_floor: int = 0  # faces of the table at faces_version left out by the floor
    # identity templates (jobs.shards.templates): one per subject, rebuilt with every generation
    templates_file: str | None = None
    templates_sha256: str | None = None
    templates: int = 0
    template_faces: int = 0
    # face_id -> subject_id of the indexed faces (jobs.shards.face_subjects); None: an index built before it
    face_subjects_file: str | None = None
    face_subjects_sha256: str | None = None
    gallery_subjects: int | None = None  # distinct subjects among the indexed faces

    def named_files(self) -> set[str]:
        """Every file this generation names (shards, removed ids, templates, face subjects)."""
        files = {entry.file for entry in self.shards}
        for name in (self.removed_file, self.templates_file, self.face_subjects_file):
            if name is not None:
                files.add(name)
        return files

    def checked_files(self) -> list[tuple[str, str]]:
        """(file name, sha256) of every file this generation names."""
        named = [(entry.file, entry.sha256) for entry in self.shards]
        if self.removed_file and self.removed_sha256:
            named.append((self.removed_file, self.removed_sha256))
        if self.templates_file and self.templates_sha256:
            named.append((self.templates_file, self.templates_sha256))
        if self.face_subjects_file and self.face_subjects_sha256:
            named.append((self.face_subjects_file, self.face_subjects_sha256))
        return named

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode("utf-8")


def write_manifest(directory: AnyPath, manifest: Manifest) -> None:
    """The commit point of an index: every file it names is written before it."""
    storage.write_atomically(directory / MANIFEST, manifest.to_json())


def read_manifest(directory: AnyPath | str) -> Manifest:
    """The manifest, checked against the fields readers use; `IndexFileError` naming the file otherwise."""
    path = storage.upath(directory) / MANIFEST
    if not path.is_file():
        raise IndexFileError(f"{directory} is not a Lineup index (no {MANIFEST}); build one with `lineup index`")
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFileError(f"{path} is not valid JSON ({error}); rebuild the index") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in error.errors()[:5])
        raise IndexFileError(f"{path} is not a Lineup index manifest ({problems}); rebuild the index") from None
    if any(not _is_plain_name(name) for name in manifest.named_files()):
        raise IndexFileError(f"{path} names a file outside the index folder; refusing the index, rebuild it")
    return manifest


def _is_plain_name(name: str) -> bool:
    """A file name inside the folder itself: no separator, not `.`/`..` (a manifest must not reach out)."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")
