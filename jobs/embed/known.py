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

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class HeldImages:
    """The table's image ids for one model at the run's starting version: a one-column frame (`image_ids`,
    never collected), and Delta's state of that version (its file list) built in the background as soon
    as the run starts: every lookup's scan needs it, and building it (Spark jobs over the table's log,
    ~1-2 s on the 2-vCPU VM of NOTES.md, more in a fresh JVM) then overlaps the executors' hashing of the
    first chunk instead of following it."""

    def __init__(self, spark, table_path: str, snapshot: Any, model_id: str) -> None:
        from pyspark.sql import functions as F

        table = spark.read.format("delta").option("versionAsOf", int(snapshot.version())).load(table_path)
        self.image_ids = table.where((F.col("model_id") == model_id) & F.col("image_id").isNotNull()).select("image_id")
        self._state = threading.Thread(target=_build_state, args=(snapshot, table_path), daemon=True)
        self._state.start()

    def state_built(self) -> None:
        """Wait for the background build (the lookup would otherwise start a second one beside it)."""
        self._state.join()


def _build_state(snapshot: Any, table_path: str) -> None:
    try:
        snapshot.allFiles().count()  # builds and caches the snapshot's state, which its scans reuse
    except Exception as error:  # only a head start: the lookup builds the state itself and raises there
        log.warning("faces table %s: building its state ahead of the lookup failed: %s", table_path, error)


def known_among(spark, held: HeldImages, image_ids: set[str]) -> set[str]:
    """The ids of `image_ids` (one chunk's, so bounded by `files_per_commit`) that `held` contains. They are
    broadcast to the table scan, so the table is read once, column only, no shuffle."""
    from pyspark.sql import functions as F

    if not image_ids:
        return set()
    chunk_ids = spark.createDataFrame([(i,) for i in sorted(image_ids)], "image_id STRING")
    held.state_built()
    # no distinct(): its shuffle costs a stage; the matches (a row per face of a known image) are few
    known = held.image_ids.join(F.broadcast(chunk_ids), "image_id", "left_semi").collect()
    return {row.image_id for row in known}


def held_face_ids(spark, table_path: str, version: int, face_ids: list[int]) -> set[int]:
    """The ids of `face_ids` (rows the first pass could not check, e.g. unreadable files keyed by path)
    that the table held at `version`."""
    from pyspark.sql import functions as F

    table = spark.read.format("delta").option("versionAsOf", version).load(table_path)
    wanted = spark.createDataFrame([(i,) for i in sorted(set(face_ids))], "face_id BIGINT")
    return {row.face_id for row in table.join(F.broadcast(wanted), "face_id", "left_semi").select("face_id").collect()}
