"""Which images of this run the faces table already holds for the model, so they are skipped before any
pixel is decoded, without a driver-side list that grows with the table.

Per chunk of files, a cheap first pass on the executors reads and hashes the chunk's files (sha256 is
~100x cheaper than detection) and returns each file's id to the driver (at most `files_per_commit` of
them); a semi-join against the table's image ids (distributed, at the version the run started from)
finds the known ones, and only the other files are cut into embedding tasks: a chunk the table already
holds entirely costs no embedding pass and no commit. A table of image bytes is filtered by an anti-join
instead: no list at all. The table is read at the run's starting version, so content another chunk of the same run
committed counts as a duplicate, exactly as in a single clean run.
"""

from __future__ import annotations


def held_image_ids(spark, table_path: str, version: int, model_id: str):
    """The table's image ids for `model_id` at `version`, as a one-column frame (never collected)."""
    from pyspark.sql import functions as F

    table = spark.read.format("delta").option("versionAsOf", version).load(table_path)
    return table.where((F.col("model_id") == model_id) & F.col("image_id").isNotNull()).select("image_id")


def known_among(spark, held, image_ids: set[str]) -> set[str]:
    """The ids of `image_ids` (one chunk's, so bounded by `files_per_commit`) that `held` contains. They are
    broadcast to the table scan, so the table is read once, column only, no shuffle."""
    from pyspark.sql import functions as F

    if not image_ids:
        return set()
    chunk_ids = spark.createDataFrame([(i,) for i in sorted(image_ids)], "image_id STRING")
    # no distinct(): its shuffle costs a stage; the matches (a row per face of a known image) are few
    known = held.join(F.broadcast(chunk_ids), "image_id", "left_semi").collect()
    return {row.image_id for row in known}


def held_face_ids(spark, table_path: str, version: int, face_ids: list[int]) -> set[int]:
    """The ids of `face_ids` (rows the first pass could not check, e.g. unreadable files keyed by path)
    that the table held at `version`."""
    from pyspark.sql import functions as F

    table = spark.read.format("delta").option("versionAsOf", version).load(table_path)
    wanted = spark.createDataFrame([(i,) for i in sorted(set(face_ids))], "face_id BIGINT")
    return {row.face_id for row in table.join(F.broadcast(wanted), "face_id", "left_semi").select("face_id").collect()}
