"""The query job: probes (an archive, embedded first, or a faces table) against a sharded index.

config -> plan (driver: verify the index, resolve the threshold, check the probes' model and dimension)
-> search (executors: probe partitions x shards, each shard loaded once per Python worker) -> merge
(per probe, by score then face_id) -> optional exact re-rank -> write (matches, identities, runs).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from jobs.common.commits import append_with_retries
from jobs.common.delta import read_pinned
from jobs.common.errors import UserError
from jobs.common.runs import RunRecord, append_run, delta_version, run_job
from jobs.common.thresholds import Threshold, resolve_threshold
from jobs.common.timing import Phases
from jobs.index.shards import verify_index
from jobs.query.config import QueryConfig
from jobs.query.search import CANDIDATES_DDL, make_search_runner

log = logging.getLogger(__name__)

MATCHES_DDL = (
    "run_id STRING, probe_face_id BIGINT, probe_image_id STRING, probe_source_path STRING, probe_subject_id STRING, "
    "probe_attributes MAP<STRING, STRING>, probe_status STRING, probe_error STRING, rank INT, "
    "gallery_face_id BIGINT, gallery_subject_id STRING, score FLOAT, threshold DOUBLE, above_threshold BOOLEAN, "
    "model_id STRING, index_id STRING, gallery_size BIGINT, queried_at TIMESTAMP"
)
IDENTITIES_DDL = (
    "run_id STRING, probe_face_id BIGINT, probe_image_id STRING, probe_subject_id STRING, rank INT, "
    "gallery_subject_id STRING, best_score FLOAT, best_gallery_face_id BIGINT, candidate_faces INT, "
    "threshold DOUBLE, above_threshold BOOLEAN, model_id STRING, index_id STRING, queried_at TIMESTAMP"
)


def run_query(config: QueryConfig, spark=None) -> dict[str, Any]:
    params = config.query.model_dump(mode="json")
    return run_job("query", config, spark, params, lambda spark, r, phases: _run(config, spark, r, phases))


def _run(config: QueryConfig, spark, record: RunRecord, phases: Phases) -> dict[str, Any]:
    with phases.phase("prepare"):
        probes, probe_counts, plan_inputs = _prepare(config, spark, record)
    with phases.phase("search_and_write"):
        return _search_and_write(config, spark, record, probes, probe_counts, *plan_inputs)


def _prepare(config: QueryConfig, spark, record: RunRecord):
    """Driver side: verify the index, resolve the threshold, read (or embed) the probes."""
    settings = config.query
    index_dir = config.index_path()
    manifest = verify_index(index_dir)
    if manifest.get("metric") != "inner_product":
        # Every merge and threshold here reads "larger is more similar" (cosine on unit vectors).
        raise UserError(f"index {index_dir} uses metric {manifest.get('metric')}; rebuild it with `lineup index`")
    record.add_input("index", str(index_dir), None)
    record.params["index_id"] = manifest["index_id"]
    threshold = resolve_threshold(
        settings.threshold, manifest["model_id"], config.spark.resolved_data_root(), "query.threshold"
    )
    record.threshold, record.threshold_source = threshold.value, threshold.source
    probes, probe_counts = probe_frame(config, spark, manifest, record)
    check_probes(probes, manifest)
    return probes, probe_counts, (index_dir, manifest, threshold)


def _search_and_write(
    config: QueryConfig,
    spark,
    record: RunRecord,
    probes,
    probe_counts: dict,
    index_dir: Path,
    manifest: dict,
    threshold,
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    settings, started = config.query, time.perf_counter()
    gallery = gallery_faces(spark, manifest)
    record.add_input("gallery_faces", manifest["faces_table"], manifest["faces_version"])
    gallery_size = int(manifest["vectors"]) - int(manifest.get("removed", 0))

    ok_probes = probes.where(F.col("status") == "ok")
    # Re-ranking an exact index would change nothing: only approximate ones fetch extra candidates.
    fetch = settings.k * settings.rerank_factor if settings.rerank and not manifest["exact"] else settings.k
    plan = choose_plan(index_dir, manifest, settings)
    record.params["plan"] = plan
    top = search_candidates(spark, ok_probes, index_dir, manifest, settings, fetch, plan)
    top = top.join(gallery.select("gallery_face_id", "gallery_subject_id"), "gallery_face_id", "left")
    if fetch > settings.k:
        top = rerank(top, ok_probes, gallery, settings.k)
    matches = matches_frame(top, probes, threshold, manifest, record.run_id, gallery_size)
    return _write(config, spark, record, matches, threshold, manifest, probe_counts, gallery_size, started)


def probe_frame(config: QueryConfig, spark, manifest: dict, record: RunRecord):
    """The probe faces (all statuses) and what the probe source said about them."""
    from pyspark.sql import functions as F

    probes_settings = config.query.probes
    if probes_settings.archive is not None and probes_settings.kind == "archive":
        table, version, prefix, counts = _embed_archive(config, spark, manifest)
        frame, _ = _read_delta(spark, table, version, "query.probes.probe_table")
        frame = frame.where(F.col("source_path").startswith(prefix))
        record.add_input("probe_archive", probes_settings.archive.path, None)
        record.add_input("probe_faces", table, version)
        return frame, counts
    table = config.locations.table(probes_settings.faces_table, "faces")
    frame, version = _read_delta(spark, table, probes_settings.faces_version, "query.probes.faces_table")
    if probes_settings.where:
        try:
            frame = frame.where(probes_settings.where)
            frame.schema  # noqa: B018 - analysis happens here; a bad filter must fail before any work
        except Exception as error:  # noqa: BLE001 - Spark's ParseException/AnalysisException
            raise UserError(
                f"query.probes.where {probes_settings.where!r} is not a valid filter on {table}: "
                f"{str(error).splitlines()[0]}"
            ) from None
    record.add_input("probe_faces", table, version)
    return frame, {}


def _embed_archive(config: QueryConfig, spark, manifest: dict) -> tuple[str, int, str, dict[str, int]]:
    """Embed the probe archive with the embed job's own code into the probe faces table."""
    from jobs.embed.config import EmbedConfig
    from jobs.embed.job import run_embed
    from jobs.models.pack import load_pack

    probes = config.query.probes
    assert probes.archive is not None  # checked by ProbeSettings
    embed_config = EmbedConfig.model_validate(
        {
            "spark": config.spark,
            "log_level": config.log_level,
            "runs_table": config.runs_table,
            "embed": {
                "input": probes.archive.model_copy(update={"path": config.locations.input_path(probes.archive.path)}),
                "table_path": config.probe_table_path(),
                "pack_dir": probes.pack_dir,
                "labels": probes.labels,
            },
        }
    )
    pack = load_pack(embed_config.resolved_pack_dir())
    if pack.model_id != manifest["model_id"]:
        raise UserError(
            f"query.probes.pack_dir gives model {pack.model_id}, the index at {config.index_path()} holds "
            f"{manifest['model_id']}: embed probes with the gallery's pack"
        )
    try:
        summary = run_embed(embed_config, spark)
    except UserError as error:
        raise UserError(str(error).replace("embed.input.", "query.probes.archive.")) from None
    counts = {f"probe_{key}": value for key, value in summary.items() if isinstance(value, int)}
    counts.update({f"probe_status_{key}": value for key, value in summary["by_status"].items()})
    return (
        str(embed_config.faces_table_path()),
        summary["outputs"]["faces_table_version"],
        _source_prefix(embed_config.embed.input),
        counts,
    )


def _source_prefix(archive) -> str:
    """How the faces table's source_path starts for this archive's images (and for no other archive's):
    `dir/...` for folders (and folders of tars), `file.tar!member` for one tar, `table#id` for tables."""
    path = archive.path.rstrip("/")
    if archive.kind == "table":
        return f"{path}#"
    if archive.kind == "tar" and not Path(path).is_dir():
        return f"{path}!"
    return f"{path}/"


def _read_delta(spark, table: str, version: int | None, key: str):
    frame, version = read_pinned(spark, table, version, key)
    missing = {"face_id", "image_id", "embedding", "model_id", "status"} - set(frame.columns)
    if missing:
        raise UserError(f"{key} {table} is not a faces table (no columns {sorted(missing)})")
    return frame, version


def check_probes(probes, manifest: dict) -> None:
    """Refuse probes of another model or dimension: their scores would mean nothing."""
    from pyspark.sql import functions as F

    ok = probes.where(F.col("status") == "ok")
    seen = ok.groupBy("model_id", F.size("embedding").alias("d")).count().collect()  # one pass over the probes
    models = sorted({row.model_id for row in seen})
    if not models:
        return  # no usable probe: the run records their statuses
    foreign = [model for model in models if model != manifest["model_id"]]
    if foreign:
        raise UserError(
            f"probes were embedded with {foreign}, the index holds {manifest['model_id']}: "
            "embed the probes with the gallery's model pack (or filter them with query.probes.where)"
        )
    dims = sorted({row.d for row in seen})
    if dims != [manifest["dim"]]:
        raise UserError(f"probe embeddings have {dims} dimensions, the index {manifest['dim']}: re-embed the probes")


def gallery_faces(spark, manifest: dict):
    """The gallery's rows at the version the index pins: face_id -> subject_id and embedding."""
    from pyspark.sql import functions as F

    frame = spark.read.format("delta").option("versionAsOf", manifest["faces_version"]).load(manifest["faces_table"])
    return frame.where((F.col("status") == "ok") & (F.col("model_id") == manifest["model_id"])).select(
        F.col("face_id").alias("gallery_face_id"),
        F.col("subject_id").alias("gallery_subject_id"),
        F.col("embedding").alias("gallery_embedding"),
    )


def choose_plan(index_dir: Path, manifest: dict, settings) -> str:
    """all_shards while the whole index fits a worker's share of memory, else one shard per task."""
    if settings.plan != "auto":
        return settings.plan
    index_bytes = sum((index_dir / entry["file"]).stat().st_size for entry in manifest["shards"])
    return "all_shards" if index_bytes <= settings.worker_index_gb * 2**30 else "per_shard"


def search_candidates(spark, ok_probes, index_dir: Path, manifest: dict, settings, fetch: int, plan: str):
    """The `fetch` best gallery faces per probe over all shards (probe_face_id, gallery_face_id, score, rank)."""
    from pyspark.sql import functions as F

    partitions = settings.probe_partitions or spark.sparkContext.defaultParallelism
    probes = ok_probes.select(F.col("face_id").alias("probe_face_id"), "embedding").dropDuplicates(["probe_face_id"])
    context = {
        "index_dir": str(index_dir),
        "manifest": {key: manifest.get(key) for key in ("shards", "removed_file", "removed_sha256")},
        "search_param": manifest["search_param"],
        "search_value": settings.search_value or manifest.get("search_value"),
        "k": fetch,
        "threads": 1,
    }
    runner = make_search_runner(context)
    if plan == "all_shards":
        return probes.repartition(partitions).mapInArrow(runner, CANDIDATES_DDL)
    shard_count = len(manifest["shards"])
    shards = spark.range(shard_count).select(F.col("id").cast("int").alias("shard"))
    tasks = (
        probes.withColumn("probe_part", F.pmod(F.xxhash64("probe_face_id"), F.lit(partitions)))
        .crossJoin(F.broadcast(shards))
        .withColumn("task", F.col("probe_part") * shard_count + F.col("shard"))
        .repartitionByRange(partitions * shard_count, "task")
    )
    per_shard = tasks.select("probe_face_id", "embedding", "shard").mapInArrow(runner, CANDIDATES_DDL)
    return keep_top(per_shard, fetch)


def keep_top(candidates, k: int):
    """The k best per probe over all shards: larger score first (inner product), ties to the smaller face_id."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("probe_face_id").orderBy(F.col("score").desc(), F.col("gallery_face_id").asc())
    ranked = candidates.drop("rank").withColumn("rank", F.row_number().over(order))
    return ranked.where(F.col("rank") <= k)


def rerank(top, ok_probes, gallery, k: int):
    """Rescore candidates exactly (dot product of the stored, L2-normalised embeddings), keep the k best."""
    from pyspark.sql import functions as F

    probe_vectors = ok_probes.select(F.col("face_id").alias("probe_face_id"), F.col("embedding").alias("probe_vec"))
    exact = F.aggregate(
        F.zip_with("probe_vec", "gallery_embedding", lambda x, y: x.cast("double") * y.cast("double")),
        F.lit(0.0).cast("double"),
        lambda acc, x: acc + x,
    )
    scored = (
        top.join(probe_vectors.dropDuplicates(["probe_face_id"]), "probe_face_id")
        .join(gallery.select("gallery_face_id", "gallery_embedding"), "gallery_face_id")
        .withColumn("score", exact.cast("float"))
        .drop("probe_vec", "gallery_embedding")
    )
    return keep_top(scored, k)


def matches_frame(top, probes, threshold: Threshold, manifest: dict, run_id: str, gallery_size: int):
    """Candidates with their probe's details, plus one row (rank null) per probe image without a usable face."""
    from pyspark.sql import functions as F

    probe_info = probes.select(
        F.col("face_id").alias("probe_face_id"),
        F.col("image_id").alias("probe_image_id"),
        F.col("source_path").alias("probe_source_path"),
        F.col("subject_id").alias("probe_subject_id"),
        F.col("attributes").alias("probe_attributes"),
        F.col("status").alias("probe_status"),
        F.col("error").alias("probe_error"),
    ).dropDuplicates(["probe_face_id"])
    found = top.join(probe_info, "probe_face_id")
    failed = probe_info.where(F.col("probe_status") != "ok").select(
        "*",
        F.lit(None).cast("int").alias("rank"),
        F.lit(None).cast("bigint").alias("gallery_face_id"),
        F.lit(None).cast("string").alias("gallery_subject_id"),
        F.lit(None).cast("float").alias("score"),
    )
    both = found.unionByName(failed)
    value = F.lit(threshold.value).cast("double")
    above = (F.col("score") >= value) if threshold.value is not None else F.lit(None).cast("boolean")
    return both.select(
        F.lit(run_id).alias("run_id"),
        "probe_face_id",
        "probe_image_id",
        "probe_source_path",
        "probe_subject_id",
        "probe_attributes",
        "probe_status",
        "probe_error",
        F.col("rank").cast("int").alias("rank"),
        "gallery_face_id",
        "gallery_subject_id",
        F.col("score").cast("float").alias("score"),
        value.alias("threshold"),
        above.alias("above_threshold"),
        F.lit(manifest["model_id"]).alias("model_id"),
        F.lit(manifest["index_id"]).alias("index_id"),
        F.lit(gallery_size).cast("bigint").alias("gallery_size"),
        F.current_timestamp().alias("queried_at"),
    )


def identities_frame(matches):
    """Per probe, the best score per gallery subject among its candidates, ranked."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys = ["run_id", "probe_face_id", "probe_image_id", "probe_subject_id", "gallery_subject_id"]
    best = (
        matches.where(F.col("rank").isNotNull() & F.col("gallery_subject_id").isNotNull())
        .groupBy(*keys, "threshold", "model_id", "index_id", "queried_at")
        .agg(
            F.max("score").alias("best_score"),
            F.min_by("gallery_face_id", "rank").alias("best_gallery_face_id"),
            F.count("*").cast("int").alias("candidate_faces"),
        )
    )
    order = Window.partitionBy("run_id", "probe_face_id").orderBy(
        F.col("best_score").desc(), F.col("gallery_subject_id").asc()
    )
    above = F.when(F.col("threshold").isNull(), F.lit(None).cast("boolean")).otherwise(
        F.col("best_score") >= F.col("threshold")
    )
    return best.select(
        "run_id",
        "probe_face_id",
        "probe_image_id",
        "probe_subject_id",
        F.row_number().over(order).cast("int").alias("rank"),
        "gallery_subject_id",
        "best_score",
        "best_gallery_face_id",
        "candidate_faces",
        "threshold",
        above.alias("above_threshold"),
        "model_id",
        "index_id",
        "queried_at",
    )


def _write(config, spark, record, matches, threshold, manifest, probe_counts, gallery_size, started) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    matches_table, identities_table = config.matches_table_path(), config.identities_table_path()
    runs_table = config.runs_table_path()
    # One computation feeds the matches, the identities and the counts.
    matches = matches.persist(StorageLevel.DISK_ONLY)
    try:
        per_status = (
            matches.groupBy("probe_status")
            .agg(
                F.countDistinct("probe_face_id").alias("probes"),
                F.count(F.when(F.col("rank").isNotNull(), 1)).alias("candidates"),
                F.countDistinct(F.when(F.col("above_threshold"), F.col("probe_face_id"))).alias("above"),
            )
            .collect()
        )
        by_status = {row.probe_status: int(row.probes) for row in per_status}
        append_with_retries(matches, matches_table)
        append_with_retries(identities_frame(matches), identities_table)
    finally:
        matches.unpersist()
    record.add_output("matches", matches_table, delta_version(spark, matches_table))
    record.add_output("identities", identities_table, delta_version(spark, identities_table))
    above = sum(int(row.above) for row in per_status)
    counts = {
        "probe_rows": sum(by_status.values()),
        "probes_searched": by_status.get("ok", 0),
        "candidates": sum(int(row.candidates) for row in per_status),
        "gallery_size": gallery_size,
        **({"probes_with_candidate_above_threshold": above} if threshold.value is not None else {}),
        **{f"probes_{status}": n for status, n in by_status.items()},
        **probe_counts,
    }
    record.counts = counts
    runs_version = append_run(spark, runs_table, record, "ok")
    elapsed = time.perf_counter() - started
    return {
        "job": "query",
        "run_id": record.run_id,
        "status": "ok",
        "model_id": manifest["model_id"],
        "index_id": manifest["index_id"],
        "index_recall_at_k": manifest.get("recall_at_k"),
        "k": config.query.k,
        "plan": record.params["plan"],
        "threshold": threshold.value,
        "threshold_source": threshold.source,
        "threshold_note": threshold.describe(),
        **counts,
        "elapsed_s": round(elapsed, 1),
        "probes_per_s": round(counts["probes_searched"] / max(elapsed, 1e-9), 1),
        "outputs": {**{o["name"] + "_table": o["path"] for o in record.outputs}, "runs_table": runs_table}
        | {o["name"] + "_version": o["version"] for o in record.outputs}
        | {"runs_version": runs_version},
    }
