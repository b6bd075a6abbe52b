"""The query job: probes (an archive, embedded first, or a faces table) against a sharded index.

config -> plan (driver: verify the index, resolve the threshold, check the probes' model and dimension)
-> search (executors: probe partitions x shards, each shard loaded once per Python worker) -> merge
(per probe, by score then face_id) -> optional exact re-rank -> write (matches, identities, runs).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from jobs.common.commits import append_with_retries, limit_stats
from jobs.common.errors import UserError
from jobs.common.results import QueryResult
from jobs.common.runs import RunRecord, delta_version, run_job
from jobs.common.schema import IDENTITIES_STATS_COLUMNS, MATCHES_STATS_COLUMNS, STATS_PROPERTY
from jobs.common.thresholds import ErrorBudget, resolve_threshold
from jobs.common.timing import Phases
from jobs.faces.quality_filter import mark_low_quality, quality_floor, require_quality
from jobs.query.config import QueryConfig
from jobs.query.plan import (
    candidate_lists,
    choose_plan,
    gallery_faces,
    gallery_offsets,
    gallery_subjects,
    normalize,
    rerank,
    search_candidates,
)
from jobs.query.probes import check_probes, probe_frame
from jobs.query.subjects import check_templates, subject_identities
from jobs.query.tables import identities_frame, matches_frame, probe_columns, probe_lists, status_counts
from jobs.query.worker import CANDIDATE_LISTS_DDL
from jobs.shards.files import verify_index
from jobs.shards.manifest import Manifest

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from upath import UPath

    from jobs.common.thresholds import Threshold

log = logging.getLogger(__name__)


def run_query(config: QueryConfig, spark: SparkSession | None = None) -> QueryResult:
    params = config.query.model_dump(mode="json")
    return run_job("query", config, spark, params, lambda spark, r, phases: _run(config, spark, r, phases), QueryResult)


def _run(config: QueryConfig, spark: SparkSession, record: RunRecord, phases: Phases) -> dict[str, Any]:
    with phases.phase("prepare"):
        probes, probe_counts, plan_inputs = _prepare(config, spark, record)
    return _search_and_write(config, spark, record, phases, probes, probe_counts, *plan_inputs)


def _prepare(
    config: QueryConfig, spark: SparkSession, record: RunRecord
) -> tuple[DataFrame, dict[str, int], tuple[UPath, Manifest, Threshold]]:
    """Driver side: verify the index, resolve the threshold, read (or embed) the probes."""
    settings = config.query
    index_dir = config.index_path()
    manifest = verify_index(index_dir)
    # Everything below reads this generation only, whatever is published meanwhile.
    log.info("query: index %s generation %s pinned (%s)", index_dir, manifest.generation, manifest.index_id)
    if manifest.metric != "inner_product":
        # Every merge and threshold here reads "larger is more similar" (cosine on unit vectors).
        raise UserError(f"index {index_dir} uses metric {manifest.metric}; rebuild it with `lineup index`")
    record.add_input("index", str(index_dir), None)
    record.params["index_id"] = manifest.index_id
    threshold = resolve_threshold(
        settings.threshold, manifest.model_id, config.spark.resolved_data_root(), "query.threshold"
    )
    record.threshold, record.threshold_source = threshold.value, threshold.source
    probes, probe_counts = probe_frame(config, spark, manifest, record)
    check_probes(probes, manifest)
    floor = quality_floor(settings.quality_filter)
    if floor is not None:
        require_quality(probes, "the probes", "query.quality_filter")
        log.info("query: %s", floor.describe())
        record.params.update(floor.as_dict())
    return mark_low_quality(probes, floor), probe_counts, (index_dir, manifest, threshold)


def _search_and_write(
    config: QueryConfig,
    spark: SparkSession,
    record: RunRecord,
    phases: Phases,
    probes: DataFrame,
    probe_counts: dict,
    index_dir: UPath,
    manifest: Manifest,
    threshold: Threshold,
) -> dict[str, Any]:
    started = time.perf_counter()
    with phases.phase("plan"):
        lists, subjects, budget = _plan(config, spark, record, probes, index_dir, manifest, threshold)
    return _write(config, spark, record, phases, lists, subjects, threshold, manifest, probe_counts, budget, started)


def _plan(
    config: QueryConfig,
    spark: SparkSession,
    record: RunRecord,
    probes: DataFrame,
    index_dir: UPath,
    manifest: Manifest,
    threshold: Threshold,
) -> tuple[DataFrame, DataFrame | None, ErrorBudget]:
    """The probes' candidate lists (`probe_lists`; and the subjects search's identities rows) as Spark
    plans: nothing runs yet, except what a normalization must read from the gallery first and, for an
    index without a face_subjects file, the count of the gallery's subjects."""
    from pyspark.sql import functions as F

    settings = config.query
    gallery = gallery_faces(spark, manifest)
    record.add_input("gallery_faces", manifest.faces_table, manifest.faces_version)
    gallery_size = int(manifest.vectors) - int(manifest.removed)
    budget = ErrorBudget.of(threshold, gallery_size, gallery_subjects(manifest, gallery))
    log.info("query: %s", budget.describe())
    record.params["error_budget"] = asdict(budget)

    ok_probes = probes.where(F.col("status") == "ok")
    if settings.search != "faces":
        check_templates(manifest, str(index_dir), threshold)
    if settings.search == "subjects":
        record.params["plan"] = "subjects"
        top = spark.createDataFrame([], CANDIDATE_LISTS_DDL)
    else:
        top = _face_candidates(config, spark, record, ok_probes, gallery, index_dir, manifest, threshold)
    lists = probe_lists(top, probes)
    subjects = None
    if settings.search != "faces":
        partitions = settings.probe_partitions or spark.sparkContext.defaultParallelism
        subjects = subject_identities(
            ok_probes, str(index_dir), manifest, settings.k, partitions, threshold, record.run_id, budget
        )
    return lists, subjects, budget


def _face_candidates(
    config: QueryConfig,
    spark: SparkSession,
    record: RunRecord,
    ok_probes: DataFrame,
    gallery: DataFrame,
    index_dir: UPath,
    manifest: Manifest,
    threshold: Threshold,
) -> DataFrame:
    """The k best gallery faces of every searched probe, re-ranked and normalized as configured, as
    `candidate_lists` rows."""
    settings = config.query
    exact_rerank = settings.rerank and not manifest.exact  # re-ranking an exact index changes nothing
    # Normalization reorders candidates, so it rescores k * rerank_factor of them even from an exact index.
    normalization = threshold.normalization
    fetch = settings.k * settings.rerank_factor if exact_rerank or normalization else settings.k
    plan = choose_plan(index_dir, manifest, settings)
    record.params["plan"] = plan
    rescoring = None
    if normalization and not exact_rerank:
        rescoring = (normalization, gallery_offsets(spark, gallery, normalization), settings.k)
    # The search tasks rank each probe's subjects themselves (and carry its details) unless a later step
    # here changes its candidates; then the ranked rows are collected per probe and its details joined.
    lists = plan == "all_shards" and manifest.face_subjects_file is not None and not exact_rerank
    details = probe_columns(ok_probes) if lists else None
    top = search_candidates(spark, ok_probes, index_dir, manifest, settings, fetch, plan, rescoring, details, lists)
    if lists:
        return top
    if manifest.face_subjects_file is None:  # an index built before generations named subjects: a gallery scan
        subjects = gallery.select("gallery_face_id", "gallery_subject_id")
        top = top.drop("gallery_subject_id").join(subjects, "gallery_face_id", "left")
    if exact_rerank:
        top = rerank(top, ok_probes, gallery, None if normalization else settings.k)
        if normalization:
            top = normalize(top, ok_probes, gallery, normalization, settings.k)
    return candidate_lists(top)


def _append(spark: SparkSession, frame: DataFrame, table: str, stats_columns: str) -> None:
    limit_stats(spark, table, stats_columns)
    append_with_retries(frame, table, add_columns=True, properties={STATS_PROPERTY: stats_columns})


def _write(
    config: QueryConfig,
    spark: SparkSession,
    record: RunRecord,
    phases: Phases,
    lists: DataFrame,
    subjects: DataFrame | None,
    threshold: Threshold,
    manifest: Manifest,
    probe_counts: dict[str, int],
    budget: ErrorBudget,
    started: float,
) -> dict[str, Any]:
    from pyspark import StorageLevel

    matches_table, identities_table = config.matches_table_path(), config.identities_table_path()
    # One row per probe, computed once: both tables and the counts read it (a tenth of the matches' rows).
    lists = lists.persist(StorageLevel.DISK_ONLY)
    try:
        with phases.phase("search"):  # the search, the ranking and the probes' details, counted per status
            per_status = status_counts(lists, threshold)
        matches = matches_frame(lists, threshold, manifest, record.run_id, budget)
        identities = identities_frame(lists, threshold, manifest, record.run_id, budget)
        if subjects is not None:
            identities = identities.unionByName(subjects)
        # Two tables, two commits: each commit is mostly the driver's wait on Delta's log while the cores
        # idle, so they run side by side (the first error is raised, as a sequential write would).
        outputs = (
            (matches, matches_table, MATCHES_STATS_COLUMNS),
            (identities, identities_table, IDENTITIES_STATS_COLUMNS),
        )
        with phases.phase("write"), ThreadPoolExecutor(2, thread_name_prefix="query-write") as pool:
            writes = [pool.submit(_append, spark, frame, table, stats) for frame, table, stats in outputs]
            for write in writes:
                write.result()
    finally:
        lists.unpersist()
    for name, table in (("matches", matches_table), ("identities", identities_table)):
        record.add_output(name, table, delta_version(spark, table))
    by_status = {status: row["probes"] for status, row in per_status.items()}
    above = sum(row["above"] for row in per_status.values())
    record.counts = counts = {
        "probe_rows": sum(by_status.values()),
        "probes_searched": by_status.get("ok", 0),
        "candidates": sum(row["candidates"] for row in per_status.values()),
        "gallery_size": budget.gallery_size,
        "gallery_subjects": budget.gallery_subjects,
        **({"probes_with_candidate_above_threshold": above} if threshold.value is not None else {}),
        **{f"probes_{status}": n for status, n in by_status.items()},
        **probe_counts,
    }
    elapsed = time.perf_counter() - started
    return {
        "model_id": manifest.model_id,
        "index_id": manifest.index_id,
        "index_recall_at_k": manifest.recall_at_k,
        "k": config.query.k,
        "plan": record.params["plan"],
        "search": config.query.search,
        "threshold": threshold.value,
        "threshold_source": threshold.source,
        "threshold_note": threshold.describe(),
        "normalization": threshold.normalization_label,
        "error_budget": {**asdict(budget), "note": budget.describe()},
        **{key: value for key, value in record.params.items() if key.startswith("quality_")},
        **counts,
        "elapsed_s": round(elapsed, 1),
        "probes_per_s": round(counts["probes_searched"] / max(elapsed, 1e-9), 1),
        "outputs": {o["name"] + "_table": o["path"] for o in record.outputs}
        | {o["name"] + "_version": o["version"] for o in record.outputs},
    }
