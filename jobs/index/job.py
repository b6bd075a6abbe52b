"""The index job: faces table (pinned Delta version) -> sharded FAISS index + manifest.json.

Plan on the driver (validate the gallery, choose the index, train once on a sample), add vectors on the
executors (one shard per `face_id % shards`, written to a temp name and renamed), then measure recall@k
of the assembled index against exact search on held-out gallery vectors and store it, with the search
parameter that reaches the floor, in the manifest. `index.update=true` adds the rows that are new since
the manifest's version without retraining and records removed rows, which searches then skip.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from upath import UPath

from jobs.common.errors import UserError
from jobs.common.results import IndexResult
from jobs.common.runs import RunRecord, run_job
from jobs.common.timing import Phases
from jobs.faces.quality_filter import QualityFloor, disparity_of, quality_floor
from jobs.index.config import IndexConfig
from jobs.index.plan import read_gallery, training_sample
from jobs.index.recall import measure_recall
from jobs.index.shards import _add_shards, _emptied, new_manifest
from jobs.shards import build
from jobs.shards.choose import NoIndexFits, choose_index
from jobs.shards.face_subjects import add_face_subjects
from jobs.shards.files import deserialize, load_index, sha256_bytes, write_atomically
from jobs.shards.generations import publish, vacuum
from jobs.shards.manifest import IndexFileError, Manifest, read_manifest
from jobs.shards.templates import add_templates

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def run_index(config: IndexConfig, spark: SparkSession | None = None) -> IndexResult:
    """Build (or update) the index; the run's row goes to the runs table (ok or failed)."""

    def body(spark: SparkSession, record: RunRecord, phases: Phases) -> dict[str, Any]:
        if config.index.vacuum:
            return _vacuum(config, spark, record)
        summary = _update(config, spark, phases) if config.index.update else _build(config, spark, phases)
        record.add_input("faces", summary["faces_table"], summary["faces_version"])
        record.add_output("index", summary["outputs"]["index_dir"], None)
        record.params.update(index_id=summary["index_id"], model_id=summary["model_id"])
        record.counts = {k: v for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool)}
        summary["run_id"] = record.run_id
        return summary

    return run_job("index", config, spark, config.index.model_dump(mode="json"), body, IndexResult)


def _build(config: IndexConfig, spark: SparkSession, phases: Phases) -> dict[str, Any]:
    settings, started = config.index, time.perf_counter()
    table_path = config.faces_table_path()
    floor = quality_floor(settings.quality_filter)
    with phases.phase("read"):
        gallery = read_gallery(spark, table_path, settings.faces_version, settings.model_id, floor)
        frame, version, model_id, dim = gallery.frame, gallery.version, gallery.model_id, gallery.dim
        vectors = gallery.vectors
    try:
        choice = choose_index(
            vectors, dim, int(settings.memory_budget_gb * 2**30), settings.factory, settings.recall_floor
        )
    except NoIndexFits as error:
        raise UserError(str(error)) from None
    log.info(
        "indexing %d vectors (dim %d) of %s v%d as %s: %s",
        vectors,
        dim,
        table_path,
        version,
        choice.factory,
        choice.reason,
    )
    with phases.phase("train"):
        sample_size = max(settings.train_sample, choice.train_points)
        sample_vectors = training_sample(frame, vectors, sample_size, settings.seed)
        if not choice.exact and len(sample_vectors) < 39:
            raise UserError(f"{vectors} vectors are too few to train {choice.factory}; set index.factory=Flat")
        trained = build.train(choice, dim, sample_vectors)
    out = config.index_path()
    out.mkdir(parents=True, exist_ok=True)
    generation = time.time_ns() // 1_000_000  # in every file name: object stores cannot rename, so names never repeat
    with phases.phase("add", count=vectors, unit="vectors"):
        shards = _add_shards(spark, frame, trained, settings.shards, {}, out, generation)
    manifest = new_manifest(model_id, dim, table_path, version, choice, settings.shards, shards, vectors)
    _state_floor(manifest, floor, gallery.below_floor)
    with phases.phase("face_subjects"):
        add_face_subjects(spark, manifest, out, generation)
    if settings.templates:
        with phases.phase("templates"):
            _add_templates(spark, manifest, out, generation)
    with phases.phase("recall"):  # on the staged manifest: the published one stays in force meanwhile
        manifest = manifest.model_copy(update=measure_recall(frame, out, settings, vectors, manifest))
    manifest.build_s = round(time.perf_counter() - started, 1)
    if (manifest.recall_at_k or 0.0) < settings.recall_floor and not settings.accept_low_recall:
        raise UserError(
            f"recall@{settings.recall_k} {manifest.recall_at_k or 0.0:.3f} stays below index.recall_floor "
            f"{settings.recall_floor} for every {choice.search_param}; use a larger index.factory or set "
            "index.accept_low_recall=true (the index in force, if any, is unchanged)"
        )
    publish(out, manifest, _published(out))
    return _summary("build", manifest, out)


def _published(out: UPath) -> Manifest | None:
    """The manifest in force, if the folder holds a readable one (a new build supersedes it)."""
    try:
        return read_manifest(out)
    except IndexFileError:
        return None


def _vacuum(config: IndexConfig, spark: SparkSession, record: RunRecord) -> dict[str, Any]:
    """Remove superseded generations older than the retention (and a killed build's leftover files)."""
    out, hours = config.index_path(), config.index.retention_hours
    removed = vacuum(out, hours)
    log.info("index %s: %d file(s) of superseded generations older than %.1f h removed", out, len(removed), hours)
    record.add_output("index", str(out), None)
    record.counts = {"files_removed": len(removed)}
    return {
        "mode": "vacuum",
        "retention_hours": hours,
        "files_removed": removed,
        "outputs": {"index_dir": str(out)},
    }


def _update(config: IndexConfig, spark: SparkSession, phases: Phases) -> dict[str, Any]:
    """Add rows new since the manifest's version (no retraining) and record removed rows."""

    out, settings = config.index_path(), config.index
    manifest = read_manifest(out)
    in_force = manifest.model_copy(deep=True)  # the generation in force, superseded by this update
    if manifest.rebuild_required:
        raise UserError(f"index {out}: {manifest.rebuild_required} (index.update=false)")
    load_index(out)  # refuse a tampered index before touching it
    table_path = manifest.faces_table
    floor = quality_floor(settings.quality_filter)
    if (floor.level if floor else None) != manifest.quality_filter:
        raise UserError(
            f"index {out} was built with quality filter {manifest.quality_filter or 'NONE'}, index.quality_filter "
            f"is {settings.quality_filter}: rebuild it (index.update=false) to change the filter"
        )
    gallery = read_gallery(spark, table_path, settings.faces_version, manifest.model_id, floor)
    new_frame, version, model_id, dim = gallery.frame, gallery.version, gallery.model_id, gallery.dim
    if dim != manifest.dim:
        raise UserError(f"{table_path} now has {dim}-d embeddings, the index {manifest.dim}-d: rebuild it")
    old_frame = read_gallery(spark, table_path, manifest.faces_version, model_id, floor).frame
    added = new_frame.join(old_frame.select("face_id"), "face_id", "left_anti")
    removed_ids = old_frame.select("face_id").join(new_frame.select("face_id"), "face_id", "left_anti")
    added_count = added.count()
    generation = time.time_ns() // 1_000_000  # in every file name: object stores cannot rename, so names never repeat
    existing = {entry.shard: entry.file for entry in manifest.shards}
    if added_count:
        first = (out / existing[0]).read_bytes()
        base = build.serialize(_emptied(deserialize(first)))
        shard_count = manifest.shard_count or len(manifest.shards)
        manifest.shards = _add_shards(spark, added, base, shard_count, existing, out, generation, manifest.shards)
    removed = np.array(sorted(r.face_id for r in removed_ids.collect()), dtype=np.int64)
    if manifest.removed_file:
        previous = np.frombuffer((out / manifest.removed_file).read_bytes(), dtype=np.int64)
        removed = np.union1d(previous, removed)
    if len(removed):
        name = f"removed.g{generation}.bin"
        write_atomically(out / name, removed.tobytes())
        manifest.removed_file, manifest.removed_sha256 = name, sha256_bytes(removed.tobytes())
        manifest.removed = int(len(removed))
    manifest.faces_version = version
    _state_floor(manifest, floor, gallery.below_floor)
    with phases.phase("face_subjects"):
        add_face_subjects(spark, manifest, out, generation)
    if settings.templates or manifest.templates_file:  # update == rebuild, for templates
        with phases.phase("templates"):
            _add_templates(spark, manifest, out, generation)
    manifest.added_since_build += added_count
    manifest.vectors = sum(entry.vectors for entry in manifest.shards)
    if not manifest.exact:
        with phases.phase("recall"):
            manifest = manifest.model_copy(update=measure_recall(new_frame, out, settings, None, manifest))
    publish(out, manifest, in_force)
    summary = _summary("update", manifest, out)
    share = manifest.added_since_build / max(manifest.vectors_at_build, 1)
    summary.update(
        added=added_count,
        removed=int(len(removed)),
        added_share_since_build=round(share, 4),
        rebuild_advised=share > settings.rebuild_fraction,
    )
    return summary


def _add_templates(spark: SparkSession, manifest: Manifest, out: UPath, generation: int) -> None:
    """One template per subject from the faces this generation indexes (the same version and floor)."""
    add_templates(spark, manifest, out, generation)
    log.info("index: %d subject templates from %d faces", manifest.templates, manifest.template_faces)


def _state_floor(manifest: Manifest, floor: QualityFloor | None, below_floor: int) -> None:
    """The manifest says which floor kept how many of the table's faces out (and whom it discards)."""
    manifest.quality_filter = floor.level if floor else None
    manifest.quality_floor = floor.floor if floor else None
    manifest.faces_below_quality_floor = below_floor
    if floor is not None:
        log.info("index: %d face(s) below the floor left out; %s", below_floor, floor.describe())


def _summary(mode: str, manifest: Manifest, out: UPath) -> dict[str, Any]:
    keys = [
        "index_id",
        "model_id",
        "dim",
        "factory",
        "faces_table",
        "faces_version",
        "vectors",
        "shard_count",
        "search_param",
        "search_value",
        "recall_at_k",
        "recall_k",
        "recall_queries",
        "build_s",
        "quality_filter",
        "quality_floor",
        "faces_below_quality_floor",
        "templates",
        "template_faces",
        "gallery_subjects",
    ]
    disparity = disparity_of(manifest.quality_filter)
    return {
        "mode": mode,
        **{k: getattr(manifest, k) for k in keys},
        **({"quality_floor_disparity": disparity} if disparity else {}),
        "outputs": {"index_dir": str(out)},
    }
