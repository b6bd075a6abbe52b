"""The search plan (driver side, Spark frames): which plan fits the index, the candidate frame it
produces, the per-probe top k, and the optional exact re-rank from the gallery's stored embeddings."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from jobs.common.normalization import Normalization
from jobs.common.normalized_scores import normalized_score, offset_column
from jobs.common.schema import spark_type
from jobs.query.ranking import CANDIDATE_ARROW, rank_subjects
from jobs.query.worker import (
    CANDIDATE_LISTS_ARROW,
    CANDIDATE_LISTS_DDL,
    CANDIDATES_DDL,
    SearchContext,
    make_search_runner,
)
from jobs.shards.files import file_size
from jobs.shards.gallery import indexed_faces
from jobs.shards.manifest import Manifest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pyspark.broadcast import Broadcast
    from pyspark.sql import Column, DataFrame, SparkSession

    from jobs.common.storage import AnyPath
    from jobs.query.config import QuerySettings


def gallery_faces(spark: SparkSession, manifest: Manifest) -> DataFrame:
    """The gallery's rows at the version the index pins (above its quality floor, if it has one):
    face_id -> subject_id and embedding."""
    from pyspark.sql import functions as F

    return indexed_faces(spark, manifest).select(
        F.col("face_id").alias("gallery_face_id"),
        F.col("subject_id").alias("gallery_subject_id"),
        F.col("embedding").alias("gallery_embedding"),
    )


def gallery_subjects(manifest: Manifest, gallery: DataFrame) -> int:
    """How many subjects the gallery's faces belong to (faces without a subject_id not counted): as the
    generation states it, or counted from the faces table for an index built before it did."""
    from pyspark.sql import functions as F

    if manifest.gallery_subjects is not None:
        return manifest.gallery_subjects
    row = gallery.select(F.countDistinct("gallery_subject_id").alias("n")).first()
    return int(row["n"]) if row is not None else 0


def choose_plan(index_dir: AnyPath, manifest: Manifest, settings: QuerySettings) -> str:
    """all_shards while the whole index fits a worker's share of memory, else one shard per task."""
    if settings.plan != "auto":
        return settings.plan
    index_bytes = sum(file_size(index_dir, entry.file) for entry in manifest.shards)
    return "all_shards" if index_bytes <= settings.worker_index_gb * 2**30 else "per_shard"


def gallery_offsets(spark: SparkSession, gallery: DataFrame, normalization: Normalization) -> Broadcast:
    """Every gallery face's normalization offset, broadcast to the executors as (sorted face ids, offsets):
    12 bytes a face, so the search tasks rescore their candidates without a join."""
    from pyspark.sql import functions as F

    table = gallery.select(
        F.col("gallery_face_id"), offset_column("gallery_embedding", normalization).cast("float").alias("offset")
    ).toArrow()
    ids = table.column("gallery_face_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    offsets = table.column("offset").to_numpy(zero_copy_only=False).astype(np.float32)
    return spark.sparkContext.broadcast((ids[order], offsets[order]))


def search_candidates(
    spark: SparkSession,
    ok_probes: DataFrame,
    index_dir: AnyPath,
    manifest: Manifest,
    settings: QuerySettings,
    fetch: int,
    plan: str,
    rescoring: tuple[Normalization, Broadcast, int] | None = None,
    details: list[Column] | None = None,
    lists: bool = False,
) -> DataFrame:
    """The `fetch` best gallery faces per probe over all shards (probe_face_id, gallery_face_id, score,
    normalized_score, rank, gallery_subject_id). With `rescoring` = (normalization, gallery offsets
    broadcast, keep), the executors rescore those candidates and the `keep` best by normalized score
    remain. With `lists`, the all_shards plan's tasks return `candidate_lists`' rows instead, each with
    the probe's `details` (columns of the probes, probe_face_id first)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    partitions = settings.probe_partitions or spark.sparkContext.defaultParallelism
    lists = lists and plan == "all_shards"
    carried = details if details and lists else [F.col("face_id").alias("probe_face_id")]
    probes = ok_probes.select(*carried, "embedding")
    context = SearchContext(
        index_dir=str(index_dir),
        manifest=manifest.model_copy(update={"superseded": [], "erasures": []}),  # what tasks need, no more
        k=fetch,
        search_value=settings.search_value or manifest.search_value,
        subjects=manifest.face_subjects_file is not None,
        lists=lists,
    )
    if rescoring is not None:
        normalization, offsets, keep = rescoring
        context = replace(context, normalization=normalization, gallery_offsets=offsets, keep=keep)
    runner = make_search_runner(context)
    if plan == "all_shards":
        passed = [field for field in probes.schema.fields if field.name not in ("probe_face_id", "embedding")]
        candidates = StructType.fromDDL(CANDIDATE_LISTS_DDL if context.lists else CANDIDATES_DDL)
        assert isinstance(candidates, StructType)
        schema = StructType(candidates.fields + passed)
        # hashed on the face id, so that dropping repeated faces needs no second shuffle
        spread = probes.repartition(partitions, "probe_face_id").dropDuplicates(["probe_face_id"])
        return spread.mapInArrow(runner, schema)
    shard_count = len(manifest.shards)
    shards = spark.range(shard_count).select(F.col("id").cast("int").alias("shard"))
    tasks = (
        probes.dropDuplicates(["probe_face_id"])
        .withColumn("probe_part", F.pmod(F.xxhash64("probe_face_id"), F.lit(partitions)))
        .crossJoin(F.broadcast(shards))
        .withColumn("task", F.col("probe_part") * shard_count + F.col("shard"))
        .repartitionByRange(partitions * shard_count, "task")
    )
    per_shard = tasks.select("probe_face_id", "embedding", "shard").mapInArrow(runner, CANDIDATES_DDL)
    if rescoring is not None:
        return keep_top(per_shard, rescoring[2], by="normalized_score")
    return keep_top(per_shard, fetch)


def candidate_lists(rows: DataFrame) -> DataFrame:
    """Candidate rows (as `search_candidates` returns them, ranked per probe) -> one row per probe:
    CANDIDATE_LISTS_ARROW (its candidates in rank order, its subjects ranked by `rank_subjects`)."""
    from pyspark.sql import functions as F

    item = F.struct(*[F.col(f.name).cast(spark_type(f.type)).alias(f.name) for f in CANDIDATE_ARROW])
    nested = rows.groupBy("probe_face_id").agg(F.sort_array(F.collect_list(item)).alias("candidates"))
    return nested.mapInArrow(_with_ranked_subjects, CANDIDATE_LISTS_DDL)


def _with_ranked_subjects(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        candidates = batch.column("candidates")
        yield pa.RecordBatch.from_arrays(
            [batch.column("probe_face_id"), candidates, rank_subjects(candidates)], schema=CANDIDATE_LISTS_ARROW
        )


def keep_top(candidates: DataFrame, k: int, by: str = "score") -> DataFrame:
    """The k best per probe over all shards: larger `by` first (inner product), ties to the smaller face_id."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("probe_face_id").orderBy(F.col(by).desc(), F.col("gallery_face_id").asc())
    ranked = candidates.drop("rank").withColumn("rank", F.row_number().over(order))
    return ranked.where(F.col("rank") <= k)


def rerank(top: DataFrame, ok_probes: DataFrame, gallery: DataFrame, k: int | None) -> DataFrame:
    """Rescore candidates exactly (dot product of the stored, L2-normalised embeddings), keep the k best
    (all of them when `k` is None)."""
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
    return scored if k is None else keep_top(scored, k)


def normalize(
    top: DataFrame, ok_probes: DataFrame, gallery: DataFrame, normalization: Normalization, k: int
) -> DataFrame:
    """Each candidate's normalized score beside its raw one; the k best by normalized score per probe
    (after an exact re-rank, whose scores exist only here; otherwise the search tasks rescore)."""
    from pyspark.sql import functions as F

    probe_offsets = ok_probes.select(
        F.col("face_id").alias("probe_face_id"), offset_column("embedding", normalization).alias("probe_offset")
    ).dropDuplicates(["probe_face_id"])
    gallery_offsets = (
        top.select("gallery_face_id")
        .distinct()
        .join(gallery.select("gallery_face_id", "gallery_embedding"), "gallery_face_id")
        .select("gallery_face_id", offset_column("gallery_embedding", normalization).alias("gallery_offset"))
    )
    scored = (
        top.join(probe_offsets, "probe_face_id")
        .join(gallery_offsets, "gallery_face_id")
        .withColumn(
            "normalized_score", normalized_score(F.col("score"), F.col("probe_offset"), F.col("gallery_offset"))
        )
        .drop("probe_offset", "gallery_offset")
    )
    return keep_top(scored, k, by="normalized_score")
