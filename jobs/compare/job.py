"""The compare job: a pairs file or table -> one raw cosine score per pair, in the pair scores table.

config -> plan (driver: read and number the pairs, pick the model, resolve the threshold) -> worker
(executors: embed each distinct image once, or look faces up in a faces table) -> write (scores, runs).
A pair that cannot be scored is a row with a status saying which side failed and why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jobs.common.commits import append_with_retries
from jobs.common.delta import pinned_version
from jobs.common.errors import UserError
from jobs.common.runs import RunRecord, append_run, delta_version, run_job
from jobs.common.thresholds import Threshold, resolve_threshold
from jobs.common.timing import Phases
from jobs.compare.config import CompareConfig
from jobs.compare.worker import IMAGE_DDL, make_image_runner

SCORES_DDL = (
    "run_id STRING, pair_index BIGINT, a STRING, b STRING, a_face_id BIGINT, b_face_id BIGINT, a_faces INT, "
    "b_faces INT, score FLOAT, status STRING, error STRING, threshold DOUBLE, above_threshold BOOLEAN, "
    "model_id STRING, compared_at TIMESTAMP"
)


def run_compare(config: CompareConfig, spark=None) -> dict[str, Any]:
    params = config.compare.model_dump(mode="json")
    return run_job("compare", config, spark, params, lambda spark, r, phases: _timed(config, spark, r, phases))


def _timed(config: CompareConfig, spark, record: RunRecord, phases: Phases) -> dict[str, Any]:
    with phases.phase("score_and_write"):
        return _run(config, spark, record)


def read_pairs_table(spark, settings):
    """(pair_index, a, b) in file order; `UserError` naming the file and its columns when they are wrong."""
    from pyspark.sql import functions as F

    path = str(Path(settings.path).expanduser().resolve())
    try:
        if settings.format in ("csv", "tsv"):
            if not Path(path).is_file():
                raise UserError(f"compare.pairs.path {path} is not a file")
            frame = (
                spark.read.option("header", "true").option("sep", "\t" if settings.format == "tsv" else ",").csv(path)
            )
        else:
            frame = spark.read.format(settings.format).load(path)
        columns = frame.columns
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - Spark's AnalysisException, pages long
        raise UserError(
            f"compare.pairs.path {path} is not a readable {settings.format} table: {str(error).splitlines()[0]}"
        ) from None
    missing = [c for c in settings.columns if c not in columns]
    if missing:
        raise UserError(
            f"compare.pairs.path {path} has no column(s) {missing} (it has {columns}); set compare.pairs.columns"
        )
    a, b = settings.columns
    # zipWithIndex numbers rows in file order, so pair_index points back at the input line.
    numbered = frame.select(F.col(a).cast("string"), F.col(b).cast("string")).rdd.zipWithIndex()
    return spark.createDataFrame(
        numbered.map(lambda r: (r[1], r[0][0], r[0][1])), "pair_index BIGINT, a STRING, b STRING"
    )


def _run(config: CompareConfig, spark, record: RunRecord) -> dict[str, Any]:
    from pyspark import StorageLevel

    settings, started = config.compare, time.perf_counter()
    pairs = read_pairs_table(spark, settings.pairs).persist(StorageLevel.DISK_ONLY)
    record.add_input("pairs", settings.pairs.path, None)
    if settings.pairs.kind == "images":
        sides, model_id = _image_sides(config, spark, pairs)
    else:
        sides, model_id = _face_sides(config, spark, pairs, record)
    threshold = resolve_threshold(settings.threshold, model_id, config.spark.resolved_data_root(), "compare.threshold")
    record.threshold, record.threshold_source = threshold.value, threshold.source
    scores = score_pairs(pairs, sides, threshold, model_id, record.run_id)
    return _write(config, spark, record, pairs, scores, threshold, model_id, started)


def score_pairs(pairs, sides, threshold: Threshold, model_id: str, run_id: str):
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
    return joined.select(
        F.lit(run_id).alias("run_id"),
        "pair_index",
        "a",
        "b",
        F.col("a_face_id").alias("a_face_id"),
        F.col("b_face_id").alias("b_face_id"),
        F.col("a_faces").cast("int").alias("a_faces"),
        F.col("b_faces").cast("int").alias("b_faces"),
        score.alias("score"),
        status.alias("status"),
        F.when(status != "ok", F.trim(error)).alias("error"),
        value.alias("threshold"),
        (score >= value if threshold.value is not None else F.lit(None).cast("boolean")).alias("above_threshold"),
        F.lit(model_id).alias("model_id"),
        F.current_timestamp().alias("compared_at"),
    )


def _write(config: CompareConfig, spark, record: RunRecord, pairs, scores, threshold, model_id, started) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    scores_table, runs_table = config.scores_table_path(), config.runs_table_path()
    scores = scores.persist(StorageLevel.DISK_ONLY)
    try:
        by_status = {row.status: int(row.n) for row in scores.groupBy("status").agg(F.count("*").alias("n")).collect()}
        above = scores.where(F.col("above_threshold")).count() if threshold.value is not None else None
        append_with_retries(scores, scores_table)
    finally:
        scores.unpersist()
        pairs.unpersist()
    record.add_output("pair_scores", scores_table, delta_version(spark, scores_table))
    record.counts = {"pairs": sum(by_status.values()), **{f"pairs_{k}": v for k, v in by_status.items()}}
    if above is not None:
        record.counts["pairs_above_threshold"] = above
    runs_version = append_run(spark, runs_table, record, "ok")
    return {
        "job": "compare",
        "run_id": record.run_id,
        "status": "ok",
        "model_id": model_id,
        "threshold": threshold.value,
        "threshold_source": threshold.source,
        "threshold_note": threshold.describe(),
        **record.counts,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "outputs": {
            "pair_scores_table": scores_table,
            "pair_scores_version": record.outputs[-1]["version"],
            "runs_table": runs_table,
            "runs_version": runs_version,
        },
    }


def _image_sides(config: CompareConfig, spark, pairs):
    """Each distinct image path embedded once on the executors: key, face_id, faces, embedding, status."""
    from pyspark.sql import functions as F

    from jobs.models.build import default_pack_dir
    from jobs.models.pack import load_pack

    settings = config.compare
    pack = load_pack(Path(settings.pack_dir).expanduser().resolve() if settings.pack_dir else default_pack_dir())
    root = Path(settings.pairs.images_root or Path(settings.pairs.path).expanduser().resolve().parent)
    root = root.expanduser().resolve()
    keys = pairs.select(F.col("a").alias("key")).union(pairs.select(F.col("b").alias("key"))).distinct()
    keys = keys.where(F.col("key").isNotNull())
    resolved = F.when(F.col("key").startswith("/"), F.col("key")).otherwise(F.concat(F.lit(f"{root}/"), F.col("key")))
    count = keys.count()
    tasks = max(1, -(-count // settings.images_per_task))
    paths = keys.select("key", resolved.alias("path")).repartition(tasks, "path")
    context = {
        "pack_dir": str(pack.path),
        "model_id": pack.model_id,
        "threads": settings.threads_per_worker,
        "max_pixels": settings.max_pixels,
    }
    embedded = paths.select("path").mapInArrow(make_image_runner(context), IMAGE_DDL)
    sides = paths.join(embedded, "path", "left").select(
        "key", "face_id", "faces", "embedding", "status", "error", "image_id"
    )
    return sides, pack.model_id


def _face_sides(config: CompareConfig, spark, pairs, record: RunRecord):
    """Faces looked up by face_id in a faces table (pinned version): key, face_id, faces, embedding, status."""
    from pyspark.sql import functions as F

    settings = config.compare
    table = config.faces_table_path()
    version = pinned_version(spark, table, settings.faces_version, "compare.faces_table")
    record.add_input("faces", table, version)
    faces = spark.read.format("delta").option("versionAsOf", version).load(table)
    keys = pairs.select(F.col("a").alias("key")).union(pairs.select(F.col("b").alias("key"))).distinct()
    keyed = keys.withColumn("wanted", F.expr("try_cast(key AS BIGINT)"))
    found = keyed.join(
        faces.select(F.col("face_id").alias("wanted"), "embedding", "status", "error", "model_id"), "wanted", "left"
    )
    models = sorted(
        r.model_id for r in found.where(F.col("model_id").isNotNull()).select("model_id").distinct().collect()
    )
    if len(models) > 1:
        raise UserError(f"the pairs reference faces of several models {models} in {table}: compare one model at a time")
    if not models:
        raise UserError(f"none of the face ids in {config.compare.pairs.path} is in {table} (version {version})")
    sides = found.select(
        "key",
        F.col("wanted").alias("face_id"),
        F.when(F.col("status") == "ok", 1).otherwise(0).alias("faces"),
        "embedding",
        F.when(F.col("wanted").isNull(), F.lit("bad_face_id"))
        .when(F.col("status").isNull(), F.lit("unknown_face"))
        .otherwise(F.col("status"))
        .alias("status"),
        F.when(F.col("wanted").isNull(), F.lit("not an integer face_id"))
        .when(F.col("status").isNull(), F.lit(f"face_id not in {table} version {version}"))
        .otherwise(F.col("error"))
        .alias("error"),
    )
    return sides, models[0]
