"""The query job's output tables: matches (every candidate, with the probe's status and the threshold
used) and identities (per probe, the best score per gallery subject, ranked)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.common.schema import BUDGET_FIELDS
from jobs.common.thresholds import ErrorBudget, Threshold
from jobs.shards.manifest import Manifest

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


# The error budget's columns, in every matches and identities row.
BUDGET_COLUMNS = tuple(name for name, _ in BUDGET_FIELDS)


def matches_frame(
    top: DataFrame, probes: DataFrame, threshold: Threshold, manifest: Manifest, run_id: str, budget: ErrorBudget
) -> DataFrame:
    """Candidates with their probe's details, plus one row (rank null) per probe image without a usable face."""
    from pyspark.sql import functions as F

    probe_info = probes.select(*probe_columns(probes)).dropDuplicates(["probe_face_id"])
    # The all_shards search carries each probe's details through its task; other plans join them here.
    found = top if "probe_status" in top.columns else top.join(probe_info, "probe_face_id")
    failed = probe_info.where(F.col("probe_status") != "ok").select(
        "*",
        F.lit(None).cast("int").alias("rank"),
        F.lit(None).cast("bigint").alias("gallery_face_id"),
        F.lit(None).cast("string").alias("gallery_subject_id"),
        F.lit(None).cast("float").alias("score"),
    )
    if "normalized_score" not in top.columns:
        found = found.withColumn("normalized_score", F.lit(None).cast("float"))
    both = found.unionByName(failed, allowMissingColumns=True)
    group, fmr = _probe_group_fmr(threshold, budget)
    value = F.lit(threshold.value).cast("double")
    # With a normalizing calibration the threshold judges the normalized score; the raw score stays beside it.
    judged = F.col("normalized_score") if threshold.normalization is not None else F.col("score")
    above = (judged >= value) if threshold.value is not None else F.lit(None).cast("boolean")
    return both.select(
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
        F.lit(threshold.normalization_label).cast("string").alias("normalization"),
        value.alias("threshold"),
        above.alias("above_threshold"),
        F.lit(manifest.model_id).alias("model_id"),
        F.lit(manifest.index_id).alias("index_id"),
        F.lit(budget.gallery_size).cast("bigint").alias("gallery_size"),
        F.lit(budget.gallery_subjects).cast("bigint").alias("gallery_subjects"),
        F.lit(budget.threshold_source).cast("string").alias("threshold_source"),
        group.alias("threshold_fmr_group"),
        fmr.alias("threshold_fmr"),
        F.lit(budget.threshold_fmr_data).cast("string").alias("threshold_fmr_data"),
        (F.lit(budget.gallery_size).cast("double") * fmr).alias("expected_false_candidates"),
        F.current_timestamp().alias("queried_at"),
    )


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


def identities_frame(matches: DataFrame) -> DataFrame:
    """Per probe, the best score per gallery subject among its candidates, ranked."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys = ["run_id", "probe_face_id", "probe_image_id", "probe_subject_id", "gallery_subject_id"]
    best = (
        matches.where(F.col("rank").isNotNull() & F.col("gallery_subject_id").isNotNull())
        .groupBy(*keys, "normalization", "threshold", "model_id", "index_id", *BUDGET_COLUMNS, "queried_at")
        .agg(
            F.max("score").alias("best_score"),
            F.max("normalized_score").alias("best_normalized_score"),
            F.min_by("gallery_face_id", "rank").alias("best_gallery_face_id"),
            F.count("*").cast("int").alias("candidate_faces"),
        )
    )
    # A normalized run ranks and judges subjects by their best normalized score.
    judged = F.coalesce(F.col("best_normalized_score"), F.col("best_score"))
    order = Window.partitionBy("run_id", "probe_face_id").orderBy(judged.desc(), F.col("gallery_subject_id").asc())
    above = F.when(F.col("threshold").isNull(), F.lit(None).cast("boolean")).otherwise(judged >= F.col("threshold"))
    return best.select(
        "run_id",
        "probe_face_id",
        "probe_image_id",
        "probe_subject_id",
        F.row_number().over(order).cast("int").alias("rank"),
        "gallery_subject_id",
        "best_score",
        "best_normalized_score",
        "best_gallery_face_id",
        "candidate_faces",
        "normalization",
        "threshold",
        above.alias("above_threshold"),
        "model_id",
        "index_id",
        *BUDGET_COLUMNS,
        F.lit("faces").alias("search"),
        "queried_at",
    )
