"""The compare job: a pairs file or table -> one raw cosine score per pair, in the pair scores table.

config -> plan (driver: read and number the pairs, pick the model, resolve the threshold) -> worker
(executors: embed each distinct image once, or look faces up in a faces table) -> write (scores, runs).
A pair that cannot be scored is a row with a status saying which side failed and why.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from jobs.common.commits import append_with_retries
from jobs.common.normalized_scores import normalized_score, offset_column
from jobs.common.results import CompareResult
from jobs.common.runs import RunRecord, delta_version, run_job
from jobs.common.thresholds import Threshold, resolve_threshold
from jobs.common.timing import Phases
from jobs.compare.config import CompareConfig
from jobs.compare.plan import face_sides, image_sides, read_pairs_table
from jobs.faces.quality_filter import mark_low_quality, quality_floor

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def run_compare(config: CompareConfig, spark: SparkSession | None = None) -> CompareResult:
    params = config.compare.model_dump(mode="json")
    return run_job(
        "compare", config, spark, params, lambda spark, r, phases: _timed(config, spark, r, phases), CompareResult
    )


def _timed(config: CompareConfig, spark: SparkSession, record: RunRecord, phases: Phases) -> dict[str, Any]:
    with phases.phase("score_and_write"):
        return _run(config, spark, record)


def _run(config: CompareConfig, spark: SparkSession, record: RunRecord) -> dict[str, Any]:
    from pyspark import StorageLevel

    settings, started = config.compare, time.perf_counter()
    pairs = read_pairs_table(spark, settings.pairs).persist(StorageLevel.DISK_ONLY)
    record.add_input("pairs", settings.pairs.path, None)
    if settings.pairs.kind == "images":
        sides, model_id = image_sides(config, spark, pairs)
    else:
        sides, model_id = face_sides(config, spark, pairs, record)
    threshold = resolve_threshold(settings.threshold, model_id, config.spark.resolved_data_root(), "compare.threshold")
    record.threshold, record.threshold_source = threshold.value, threshold.source
    floor = quality_floor(settings.quality_filter)
    if floor is not None:
        log.info("compare: %s", floor.describe())
        record.params.update(floor.as_dict())
    scores = score_pairs(pairs, mark_low_quality(sides, floor), threshold, model_id, record.run_id)
    return _write(config, spark, record, pairs, scores, threshold, model_id, started)


def score_pairs(pairs: DataFrame, sides: DataFrame, threshold: Threshold, model_id: str, run_id: str) -> DataFrame:
    """One pair_scores row per pair: the cosine of the two sides' embeddings, or the failing side's status."""
    from pyspark.sql import functions as F

    a_side = sides.select(*(F.col(c).alias(f"a_{c}") for c in sides.columns))
    b_side = sides.select(*(F.col(c).alias(f"b_{c}") for c in sides.columns))
    joined = pairs.join(a_side, pairs.a == a_side.a_key, "left").join(b_side, pairs.b == b_side.b_key, "left")
    dot = F.aggregate(
        F.zip_with("a_embedding", "b_embedding", lambda x, y: x.cast("double") * y.cast("double")),
        F.lit(0.0).cast("double"),
        lambda acc, x: acc + x,
    )
    a_status, b_status = F.coalesce("a_status", F.lit("missing")), F.coalesce("b_status", F.lit("missing"))
    status = (
        F.when((a_status == "ok") & (b_status == "ok"), F.lit("ok"))
        .when(a_status != "ok", F.concat(F.lit("a_"), a_status))
        .otherwise(F.concat(F.lit("b_"), b_status))
    )
    error = F.concat_ws(
        "; ",
        F.when(a_status != "ok", F.concat(F.lit("a: "), a_status, F.lit(" "), F.coalesce("a_error", F.lit("")))),
        F.when(b_status != "ok", F.concat(F.lit("b: "), b_status, F.lit(" "), F.coalesce("b_error", F.lit("")))),
    )
    value = F.lit(threshold.value).cast("double")
    score = F.when(status == "ok", dot.cast("float"))
    normalized = F.lit(None).cast("float")
    if threshold.normalization is not None:
        a_offset = offset_column("a_embedding", threshold.normalization)
        b_offset = offset_column("b_embedding", threshold.normalization)
        normalized = F.when(status == "ok", normalized_score(score, a_offset, b_offset))
    # The threshold applies to the normalized score when the calibration normalizes; the raw stays beside it.
    judged = normalized if threshold.normalization is not None else score
    return joined.select(
        F.lit(run_id).alias("run_id"),
        "pair_index",
        "a",
        "b",
        F.col("a_face_id").alias("a_face_id"),
        F.col("b_face_id").alias("b_face_id"),
        F.col("a_faces").cast("int").alias("a_faces"),
        F.col("b_faces").cast("int").alias("b_faces"),
        F.col("a_quality").cast("float").alias("a_quality"),
        F.col("b_quality").cast("float").alias("b_quality"),
        score.alias("score"),
        normalized.alias("normalized_score"),
        F.lit(threshold.normalization_label).cast("string").alias("normalization"),
        status.alias("status"),
        F.when(status != "ok", F.trim(error)).alias("error"),
        value.alias("threshold"),
        (judged >= value if threshold.value is not None else F.lit(None).cast("boolean")).alias("above_threshold"),
        F.lit(model_id).alias("model_id"),
        F.current_timestamp().alias("compared_at"),
    )


def _write(
    config: CompareConfig,
    spark: SparkSession,
    record: RunRecord,
    pairs: DataFrame,
    scores: DataFrame,
    threshold: Threshold,
    model_id: str,
    started: float,
) -> dict[str, Any]:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    scores_table = config.scores_table_path()
    scores = scores.persist(StorageLevel.DISK_ONLY)
    try:
        by_status = {row.status: int(row.n) for row in scores.groupBy("status").agg(F.count("*").alias("n")).collect()}
        above = scores.where(F.col("above_threshold")).count() if threshold.value is not None else None
        append_with_retries(scores, scores_table, add_columns=True)
    finally:
        scores.unpersist()
        pairs.unpersist()
    record.add_output("pair_scores", scores_table, delta_version(spark, scores_table))
    record.counts = {"pairs": sum(by_status.values()), **{f"pairs_{k}": v for k, v in by_status.items()}}
    if above is not None:
        record.counts["pairs_above_threshold"] = above
    return {
        "model_id": model_id,
        "threshold": threshold.value,
        "threshold_source": threshold.source,
        "threshold_note": threshold.describe(),
        "normalization": threshold.normalization_label,
        **{key: value for key, value in record.params.items() if key.startswith("quality_")},
        **record.counts,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "outputs": {
            "pair_scores_table": scores_table,
            "pair_scores_version": record.outputs[-1]["version"],
        },
    }
