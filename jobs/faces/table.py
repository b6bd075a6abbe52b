"""The faces table's creation: one table however many embed runs start on it at once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from jobs.common.commits import is_commit_conflict, limit_stats, with_commit_retries
from jobs.common.delta import has_delta_log
from jobs.common.errors import UserError, mentions
from jobs.common.schema import FACES_ARROW, FACES_DDL, STATS_PROPERTY

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

FACES_COLUMNS = frozenset(FACES_ARROW.names)

# Statistics only on columns that identify no person (schema.STATS_PROPERTY says why): never subject_id,
# source_path(_raw), attributes, error or the embedding.
STATS_COLUMNS = "face_id,image_id,face_index,det_score,quality,model_id,status,run_id,embedded_at"


def collects_personal_stats(properties: dict[str, str]) -> bool:
    """Whether a table (by its properties) still collects statistics on columns that identify a person.

    >>> collects_personal_stats({}), collects_personal_stats({STATS_PROPERTY: STATS_COLUMNS})
    (True, False)
    """
    return properties.get(STATS_PROPERTY) != STATS_COLUMNS


def ensure_faces_table(spark: SparkSession, table_path: str) -> None:
    """Create the faces table, or add the columns a table written by an older Lineup lacks."""
    from delta.tables import DeltaTable

    schema = spark.createDataFrame([], FACES_DDL).schema

    def create() -> None:
        try:
            (
                DeltaTable.createIfNotExists(spark)
                .location(table_path)
                .addColumns(schema)
                .property(STATS_PROPERTY, STATS_COLUMNS)
                .execute()
            )
        except Exception as error:
            if mentions(error, NOT_YET_A_TABLE) and not has_delta_log(spark, table_path):
                raise UserError(
                    f"embed.table_path {table_path} holds files but is not a Delta table: "
                    "point embed.table_path at an empty or new folder, or at an existing faces table"
                ) from None
            raise
        held = set(spark.read.format("delta").load(table_path).columns)
        missing = [f"`{f.name}` {f.dataType.simpleString()}" for f in schema.fields if f.name not in held]
        if missing:
            log.info("faces table %s: adding column(s) %s", table_path, ", ".join(missing))
            spark.sql(f"ALTER TABLE delta.`{table_path}` ADD COLUMNS ({', '.join(missing)})")
        limit_stats(spark, table_path, STATS_COLUMNS)

    with_commit_retries(create, table_path, is_conflict=_lost_create_race)


# Delta's words for a folder with files but no committed table: someone else's files (the user's mistake),
# or another writer's first commit under way (its `_delta_log` exists but holds no commit yet): once that
# commit lands, a retry finds the table.
NOT_YET_A_TABLE = (
    "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION",
    "DELTA_MISSING_DELTA_TABLE",
    "DELTA_TABLE_NOT_FOUND",
)


def _lost_create_race(error: BaseException) -> bool:
    return is_commit_conflict(error) or mentions(error, NOT_YET_A_TABLE)
