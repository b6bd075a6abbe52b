"""Delta commits that survive concurrent writers.

Delta's optimistic concurrency lets two writers append to one table, but a MERGE (or the first commit of
a new table) that overlaps another writer's commit fails with a `Concurrent...Exception` and asks the
caller to retry. Our writes are idempotent by construction (MERGE inserts only unknown `face_id`s; appends
carry a fresh `run_id`), so retrying the whole write is safe. After a bounded number of tries the failure
is a `TransientError` (exit 3): an orchestrator may retry the run later.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from jobs.common.delta import delta_log, has_delta_log
from jobs.common.errors import TABLE_FILE_GONE, TransientError, mentions
from jobs.common.schema import STATS_PROPERTY
from jobs.common.spark import jvm_of

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

T = TypeVar("T")

# Delta's conflict exceptions (io.delta.exceptions.*) and their error classes, as they reach Python:
# py4j wraps some, PySpark's captured exceptions carry the error class in the message.
CONFLICT_MARKERS = (
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentWriteException",
    "ConcurrentTransactionException",
    "MetadataChangedException",
    "ProtocolChangedException",
    "DELTA_CONCURRENT_",
    "DELTA_METADATA_CHANGED",
    "DELTA_PROTOCOL_CHANGED",
)


def is_commit_conflict(error: BaseException) -> bool:
    """True when `error` is Delta telling a writer that another commit won the race.

    >>> is_commit_conflict(RuntimeError("io.delta.exceptions.ConcurrentAppendException: Files were added"))
    True
    >>> is_commit_conflict(RuntimeError("Path does not exist"))
    False
    """
    return mentions(error, CONFLICT_MARKERS)


def is_conflict_or_purged(error: BaseException) -> bool:
    """A commit conflict, or a read of a table file another writer's purge (VACUUM) deleted meanwhile: a
    write that reads the table (MERGE, DELETE) planned on a snapshot the purge made stale. Both pass
    when the write is planned again on the latest version.

    >>> is_conflict_or_purged(RuntimeError("[FAILED_READ_FILE.FILE_NOT_EXIST] error reading file x.parquet"))
    True
    """

    return is_commit_conflict(error) or (mentions(error, TABLE_FILE_GONE) and mentions(error, (".parquet",)))


def with_commit_retries(
    write: Callable[[], T],
    table: str,
    attempts: int = 8,
    first_wait_s: float = 0.5,
    max_wait_s: float = 20.0,
    sleep: Callable[[float], None] = time.sleep,
    is_conflict: Callable[[BaseException], bool] = is_commit_conflict,
) -> T:
    """Run `write` (one Delta commit); on a commit conflict wait (exponential, jittered) and run it again.

    Only conflicts (as `is_conflict` judges them) are retried; any other error propagates unchanged.
    """
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except Exception as error:
            if not is_conflict(error):
                raise
            if attempt == attempts:
                raise TransientError(
                    f"{table}: the commit still conflicted with other writers after {attempts} tries; "
                    "nothing of this commit was written: rerun the job (it resumes where it stopped)"
                ) from None
            wait_s = min(max_wait_s, first_wait_s * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning(
                "commit to %s conflicted with a concurrent writer (try %d of %d): retrying in %.1f s",
                table,
                attempt,
                attempts,
                wait_s,
            )
            sleep(wait_s)
    raise AssertionError("unreachable")


def append_with_retries(
    frame: DataFrame, table: str, add_columns: bool = False, properties: dict[str, str] | None = None
) -> None:
    """Append a DataFrame to a Delta table (created by the first append), retrying commit conflicts.

    `add_columns` lets the append add nullable columns a table written by an older Lineup lacks;
    `properties` (`delta.*` table properties) apply when this append creates the table."""
    writer = frame.write.format("delta").mode("append").options(**(properties or {}))
    if add_columns:
        writer = writer.option("mergeSchema", "true")
    with_commit_retries(lambda: writer.save(table), table)


def limit_stats(spark: SparkSession, table: str, columns: str) -> None:
    """Make an existing Delta table collect statistics on `columns` only (`schema.STATS_PROPERTY`): one
    metadata commit on a table written before Lineup set it, none afterwards. Files already written keep
    the statistics they were written with. A table not created yet gets the property from its first append."""
    if not has_delta_log(spark, table):
        return
    none = jvm_of(spark).scala.Option.empty()
    snapshot = delta_log(spark, table).update(False, none, none)
    if snapshot.version() < 0:
        return
    held = snapshot.metadata().configuration().get(STATS_PROPERTY)
    if held.isDefined() and held.get() == columns:
        return
    log.info("%s: statistics limited to columns that identify no person", table)
    with_commit_retries(
        lambda: spark.sql(f"ALTER TABLE delta.`{table}` SET TBLPROPERTIES ('{STATS_PROPERTY}' = '{columns}')"), table
    )
