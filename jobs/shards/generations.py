"""Index generations: publishing a new one beside the one readers may still be on, and removing old ones.

Every build, update or erasure writes new files under new names and then the manifest (the commit point).
A reader pins the manifest it starts with; the files of a superseded generation stay, listed in the new
manifest with the time, until `vacuum` removes those older than the retention (as Delta's VACUUM does).
"""

from __future__ import annotations

import datetime as dt
import time

from jobs.common import storage
from jobs.common.storage import AnyPath
from jobs.shards.manifest import Manifest, Superseded, read_manifest, write_manifest


def publish(directory: AnyPath, manifest: Manifest, previous: Manifest | None) -> None:
    """Write `manifest` as the index's new generation (the commit point: call it only once everything it
    states is measured). Files of `previous` it no longer names are kept for readers still on that
    generation and listed under `superseded` with the time, for `vacuum` to remove after the retention."""
    now = dt.datetime.now(dt.UTC)
    manifest.generation = time.time_ns() // 1_000_000
    superseded = list(previous.superseded) if previous else []
    if previous is not None:
        gone = sorted(previous.named_files() - manifest.named_files())
        if gone:
            superseded.append(Superseded(generation=previous.generation, files=gone, superseded_at=now.isoformat()))
    manifest.superseded = without_files(superseded, manifest.named_files())
    write_manifest(directory, manifest)


def without_files(superseded: list[Superseded], files: set[str]) -> list[Superseded]:
    """The superseded generations' lists less `files` (named again, or deleted); emptied entries dropped."""
    kept = [entry.model_copy(update={"files": [f for f in entry.files if f not in files]}) for entry in superseded]
    return [entry for entry in kept if entry.files]


def vacuum(directory: AnyPath, retention_hours: float) -> list[str]:
    """Remove superseded generations' files older than `retention_hours`, and files no manifest ever
    named (a killed build's) last modified before it; the names removed. A reader that pinned a
    removed generation then exits 3 (rerun), never reads a partial index."""
    manifest = read_manifest(directory)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=retention_hours)
    keep, removed, kept_entries = manifest.named_files(), [], []
    for entry in manifest.superseded:
        if dt.datetime.fromisoformat(entry.superseded_at) <= cutoff:
            removed += [f for f in entry.files if f not in keep]
        else:
            kept_entries.append(entry)
    listed = {f for entry in manifest.superseded for f in entry.files}
    for path in storage.upath(directory).iterdir():
        if path.name in keep or path.name in listed or path.suffix not in (".faiss", ".bin", ".arrow"):
            continue
        modified = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        if modified <= cutoff:
            removed.append(path.name)
    for name in removed:
        (storage.upath(directory) / name).unlink(missing_ok=True)
    if len(kept_entries) != len(manifest.superseded):
        manifest.superseded = kept_entries
        write_manifest(directory, manifest)  # the same generation: only its list of old files changed
    return sorted(removed)
