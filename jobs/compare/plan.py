"""Driver side of the compare job: the pairs, numbered in input order, and each side's face: an image
embedded once on the executors (`worker.py`), or a face looked up in a faces table at a pinned version."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.errors import AnalysisException

from jobs.common.delta import pinned_version
from jobs.common.erasures import read_register
from jobs.common.errors import UserError
from jobs.common.locations import resolve
from jobs.common.runs import RunRecord
from jobs.common.storage import upath
from jobs.compare.config import CompareConfig
from jobs.compare.worker import IMAGE_DDL, ImageContext, make_image_runner
from jobs.faces.quality_filter import require_quality
from jobs.models.cache import PipelineRef
from jobs.models.pack import load_pack

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from jobs.compare.config import PairsSettings


def read_pairs_table(spark: SparkSession, settings: PairsSettings) -> DataFrame:
    """(pair_index, a, b) in file order; `UserError` naming the file and its columns when they are wrong."""
    from pyspark.sql import functions as F

    path = resolve(settings.path)
    try:
        if settings.format in ("csv", "tsv"):
            if not upath(path).is_file():
                raise UserError(f"compare.pairs.path {path} is not a file")
            frame = (
                spark.read.option("header", "true").option("sep", "\t" if settings.format == "tsv" else ",").csv(path)
            )
        else:
            frame = spark.read.format(settings.format).load(path)
        columns = frame.columns
    except AnalysisException as error:  # no such path, unreadable format, bad filter: the user's to fix
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


# What each side of a pair carries into scoring.
SIDE_COLUMNS = ("key", "face_id", "faces", "embedding", "status", "error", "quality", "quality_reasons")


def image_sides(config: CompareConfig, spark: SparkSession, pairs: DataFrame) -> tuple[DataFrame, str]:
    """Each distinct image path embedded once on the executors: key, face_id, faces, embedding, status."""
    from pyspark.sql import functions as F

    settings = config.compare
    pack = load_pack(config.locations.pack_dir(settings.pack_dir))
    root = (
        resolve(settings.pairs.images_root)
        if settings.pairs.images_root
        else str(upath(resolve(settings.pairs.path)).parent)
    )
    keys = pairs.select(F.col("a").alias("key")).union(pairs.select(F.col("b").alias("key"))).distinct()
    keys = keys.where(F.col("key").isNotNull())
    resolved = F.when(F.col("key").startswith("/"), F.col("key")).otherwise(F.concat(F.lit(f"{root}/"), F.col("key")))
    count = keys.count()
    tasks = max(1, -(-count // settings.images_per_task))
    paths = keys.select("key", resolved.alias("path")).repartition(tasks, "path")
    context = ImageContext(
        PipelineRef(pack.location, pack.model_id, settings.threads_per_worker, settings.max_pixels),
        # An image whose content was erased is not embedded: its side of the pair says `erased`.
        register=read_register(config.erasures_table_path(), pack.model_id),
    )
    embedded = paths.select("path").mapInArrow(make_image_runner(context), IMAGE_DDL)
    sides = paths.join(embedded, "path", "left").select(*SIDE_COLUMNS, "image_id")
    return sides, pack.model_id


def face_sides(
    config: CompareConfig, spark: SparkSession, pairs: DataFrame, record: RunRecord
) -> tuple[DataFrame, str]:
    """Faces looked up by face_id in a faces table (pinned version): key, face_id, faces, embedding, status."""
    from pyspark.sql import functions as F

    settings = config.compare
    table = config.faces_table_path()
    version = pinned_version(spark, table, settings.faces_version, "compare.faces_table")
    record.add_input("faces", table, version)
    faces = spark.read.format("delta").option("versionAsOf", version).load(table)
    keys = pairs.select(F.col("a").alias("key")).union(pairs.select(F.col("b").alias("key"))).distinct()
    keyed = keys.withColumn("wanted", F.expr("try_cast(key AS BIGINT)"))
    if config.compare.quality_filter != "NONE":
        require_quality(faces, table, "compare.quality_filter")
    quality = [
        F.col(name) if name in faces.columns else F.lit(None).cast(kind).alias(name)
        for name, kind in (("quality", "float"), ("quality_reasons", "array<string>"))
    ]
    found = keyed.join(
        faces.select(F.col("face_id").alias("wanted"), "embedding", "status", "error", "model_id", *quality),
        "wanted",
        "left",
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
        F.col("quality").cast("float").alias("quality"),
        "quality_reasons",
    )
    return sides, models[0]
