"""Which images of this run the faces table already holds for the model, so they are skipped before any
pixel is decoded, without a driver-side list that grows with the table.

Per chunk of files, a cheap first pass on the executors reads and hashes the chunk's files (sha256 is
~100x cheaper than detection); a semi-join against the table's image ids (distributed, at the version the
run started from) leaves only this chunk's known ids, at most `files_per_commit` of them, which go to
the embedding pass as a broadcast. A table of image bytes is filtered by an anti-join instead: no list
at all. The table is read at the run's starting version, so content another chunk of the same run
committed counts as a duplicate, exactly as in a single clean run.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class KnownImages:
    """Image ids already embedded with this model: a sorted array of 64-bit prefixes (8 bytes each)."""

    def __init__(self, image_ids: Iterable[str]) -> None:
        self.prefixes = np.unique(np.array([int(i[:16], 16) for i in image_ids], dtype=np.uint64))

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, str):
            return False
        key = np.uint64(int(image_id[:16], 16))
        position = int(np.searchsorted(self.prefixes, key))
        return position < len(self.prefixes) and self.prefixes[position] == key

    def __len__(self) -> int:
        return len(self.prefixes)


def held_image_ids(spark, table_path: str, version: int, model_id: str):
    """The table's image ids for `model_id` at `version`, as a one-column frame (never collected)."""
    from pyspark.sql import functions as F

    table = spark.read.format("delta").option("versionAsOf", version).load(table_path)
    return table.where((F.col("model_id") == model_id) & F.col("image_id").isNotNull()).select("image_id")


def known_among(held, chunk_ids) -> KnownImages:
    """The ids of `chunk_ids` (a frame of image_id) that `held` contains: bounded by the chunk's size.
    The chunk's ids are broadcast to the table scan, so the table is read once, column only, no shuffle."""
    from pyspark.sql import functions as F

    known = held.join(F.broadcast(chunk_ids.distinct()), "image_id", "left_semi").distinct().collect()
    return KnownImages(row.image_id for row in known)
