"""The query job's output tables: matches (every candidate, with the probe's status and the threshold
used) and identities (per probe, the best score per gallery subject, ranked), both read from one row per
probe (`probe_lists`) that holds its candidates and its ranked subjects as lists."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.common.schema import spark_type
from jobs.common.thresholds import ErrorBudget, Threshold
from jobs.query.ranking import CANDIDATE_ARROW, SUBJECT_ARROW
from jobs.shards.manifest import Manifest

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def probe_lists(top: DataFrame, probes: DataFrame) -> DataFrame:
    """One row per probe face: its details, its candidates and its ranked subjects (CANDIDATE_LISTS_DDL
    lists), plus one row per probe image without a usable face (a single empty candidate, no subjects),
    and the time of the query. Both output tables and the run's counts are read from these rows."""
    from pyspark.sql import functions as F

    def info(rows: DataFrame) -> DataFrame:
        return rows.select(*probe_columns(probes)).dropDuplicates(["probe_face_id"])

    # The all_shards search carries each probe's details through its task; other plans join them here.
    searched = F.col("status") == "ok"
    found = top if "probe_status" in top.columns else top.join(info(probes.where(searched)), "probe_face_id")
    failed = info(probes.where(~searched)).select(
        "*",
        F.array(F.lit(None).cast(spark_type(CANDIDATE_ARROW))).alias("candidates"),
        F.array().cast(f"array<{spark_type(SUBJECT_ARROW)}>").alias("ranked_subjects"),
    )
    return found.unionByName(failed).withColumn("queried_at", F.current_timestamp())


def matches_frame(
    lists: DataFrame, threshold: Threshold, manifest: Manifest, run_id: str, budget: ErrorBudget
) -> DataFrame:
    """Every candidate of every probe (`probe_lists` rows), with the probe's details and the threshold used."""
    from pyspark.sql import functions as F

    details = [name for name in lists.columns if name.startswith("probe_")]
    rows = lists.select(*details, "queried_at", F.inline("candidates"))
    # With a normalizing calibration the threshold judges the normalized score; the raw score stays beside it.
    judged = F.col("normalized_score") if threshold.normalization is not None else F.col("score")
    return rows.select(
        F.lit(run_id).alias("run_id"),
        "probe_face_id",
        "probe_image_id",
        "probe_source_path",
        "probe_subject_id",
        "probe_attributes",
        "probe_status",
        "probe_error",
        "probe_quality",
        "probe_quality_reasons",
        F.col("rank").cast("int").alias("rank"),
        "gallery_face_id",
        "gallery_subject_id",
        F.col("score").cast("float").alias("score"),
        F.col("normalized_score").cast("float").alias("normalized_score"),
        *_judgement_columns(judged, threshold, manifest, budget),
        "queried_at",
    )


def identities_frame(
    lists: DataFrame, threshold: Threshold, manifest: Manifest, run_id: str, budget: ErrorBudget
) -> DataFrame:
    """Per probe (`probe_lists` rows), the best score per gallery subject among its candidates, ranked."""
    from pyspark.sql import functions as F

    rows = lists.select(
        "probe_face_id",
        "probe_image_id",
        "probe_subject_id",
        "probe_attributes",
        "queried_at",
        F.inline("ranked_subjects"),
    )
    # A normalized run ranks and judges subjects by their best normalized score.
    judged = F.coalesce(F.col("best_normalized_score"), F.col("best_score"))
    return rows.select(
        F.lit(run_id).alias("run_id"),
        "probe_face_id",
        "probe_image_id",
        "probe_subject_id",
        F.col("rank").cast("int").alias("rank"),
        "gallery_subject_id",
        "best_score",
        "best_normalized_score",
        "best_gallery_face_id",
        "candidate_faces",
        *_judgement_columns(judged, threshold, manifest, budget),
        F.lit("faces").alias("search"),
        "queried_at",
    )


def status_counts(lists: DataFrame, threshold: Threshold) -> dict[str, dict[str, int]]:
    """Per probe status: probes, candidates and (with a threshold) probes with a candidate above it."""
    from pyspark.sql import functions as F

    value = F.lit(threshold.value).cast("double")
    field = "normalized_score" if threshold.normalization is not None else "score"
    above = F.exists("candidates", lambda c: c[field].cast("double") >= value)
    searched = F.col("probe_status") == "ok"
    rows = (
        lists.groupBy("probe_status")
        .agg(
            F.count("*").alias("probes"),
            F.sum(F.when(searched, F.size("candidates")).otherwise(0)).alias("candidates"),
            F.count_if(above if threshold.value is not None else F.lit(False)).alias("above"),
        )
        .collect()
    )
    return {
        row.probe_status: {"probes": int(row.probes), "candidates": int(row.candidates or 0), "above": int(row.above)}
        for row in rows
    }


def _judgement_columns(judged: Column, threshold: Threshold, manifest: Manifest, budget: ErrorBudget) -> list[Column]:
    """The columns both tables hold after a row's scores: the threshold and whether `judged` reaches it,
    the model and index searched, the error budget."""
    from pyspark.sql import functions as F

    value = F.lit(threshold.value).cast("double")
    above = (judged >= value) if threshold.value is not None else F.lit(None).cast("boolean")
    return [
        F.lit(threshold.normalization_label).cast("string").alias("normalization"),
        value.alias("threshold"),
        above.alias("above_threshold"),
        F.lit(manifest.model_id).alias("model_id"),
        F.lit(manifest.index_id).alias("index_id"),
        *_budget_columns(threshold, budget),
    ]


def _budget_columns(threshold: Threshold, budget: ErrorBudget) -> list[Column]:
    """The error budget's columns (schema.BUDGET_FIELDS) of a row whose probe_attributes are at hand."""
    from pyspark.sql import functions as F

    group, fmr = _probe_group_fmr(threshold, budget)
    return [
        F.lit(budget.gallery_size).cast("bigint").alias("gallery_size"),
        F.lit(budget.gallery_subjects).cast("bigint").alias("gallery_subjects"),
        F.lit(budget.threshold_source).cast("string").alias("threshold_source"),
        group.alias("threshold_fmr_group"),
        fmr.alias("threshold_fmr"),
        F.lit(budget.threshold_fmr_data).cast("string").alias("threshold_fmr_data"),
        (F.lit(budget.gallery_size).cast("double") * fmr).alias("expected_false_candidates"),
    ]


def probe_columns(probes: DataFrame) -> list[Column]:
    """The probe's details every matches row repeats (probe_face_id first), from a probes frame."""
    from pyspark.sql import functions as F

    return [
        F.col("face_id").alias("probe_face_id"),
        F.col("image_id").alias("probe_image_id"),
        F.col("source_path").alias("probe_source_path"),
        F.col("subject_id").alias("probe_subject_id"),
        F.col("attributes").alias("probe_attributes"),
        F.col("status").alias("probe_status"),
        F.col("error").alias("probe_error"),
        _or_null(probes, "quality", "float").alias("probe_quality"),
        _or_null(probes, "quality_reasons", "array<string>").alias("probe_quality_reasons"),
    ]


def _probe_group_fmr(threshold: Threshold, budget: ErrorBudget) -> tuple[Column, Column]:
    """(the probe's group, the FMR for it): where the calibration measured each demographic group's
    rate (matched impostors) and the probe's group is known, that group's; else the overall rate."""
    from pyspark.sql import functions as F

    overall = F.lit(budget.threshold_fmr).cast("double")
    calibration = threshold.calibration
    if calibration is None or not calibration.group_fmr or not calibration.matched_impostors:
        return F.lit(None).cast("string"), overall
    names = calibration.matched_impostors
    # the calibration's labels: "race=1,gender=0" (jobs.audit.identification.group_of), null if any is unknown
    label = F.concat_ws(",", *[F.concat(F.lit(f"{n}="), F.col("probe_attributes")[n]) for n in names])
    known = F.lit(True)
    for name in names:
        known = known & F.col("probe_attributes")[name].isNotNull()
    rates = F.create_map(*[F.lit(x) for pair in calibration.group_fmr.items() for x in pair])
    group = F.when(known & rates[label].isNotNull(), label)
    return group, F.coalesce(F.when(group.isNotNull(), rates[label].cast("double")), overall)


def _or_null(frame: DataFrame, column: str, type_name: str) -> Column:
    """A probe column that faces tables written by an older Lineup lack (null there)."""
    from pyspark.sql import functions as F

    return F.col(column).cast(type_name) if column in frame.columns else F.lit(None).cast(type_name)
