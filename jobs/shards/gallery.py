"""The faces an index generation holds, read back from its faces table: the one definition (status ok,
its model, at its pinned version, above its quality floor) that queries, templates and audits share."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from jobs.shards.manifest import Manifest


def indexed_faces(spark: SparkSession, manifest: Manifest) -> DataFrame:
    """The generation's faces table rows that its shards index (every column)."""
    frame = spark.read.format("delta").option("versionAsOf", manifest.faces_version).load(manifest.faces_table)
    return indexed_rows(frame, manifest)


def indexed_rows(faces: DataFrame, manifest: Manifest) -> DataFrame:
    """Of the generation's faces table read at its version, the rows its shards index."""
    from pyspark.sql import functions as F

    frame = faces.where((F.col("status") == "ok") & (F.col("model_id") == manifest.model_id))
    if manifest.quality_floor is not None:
        frame = frame.where(F.col("quality") >= F.lit(manifest.quality_floor))
    return frame
