"""Reading Delta tables at a pinned version: the one place a configured table is opened for reading.

Only the user's mistakes become a `UserError` naming the configuration key: no such path, a path that is
not a Delta table, a version that does not exist. Anything else (a JVM failure, a storage outage) keeps
its own exception and traceback: it is not the user's input that is wrong.
"""

from __future__ import annotations

from jobs.common.errors import UserError


def is_delta_table(spark, table: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, table))


def has_delta_log(spark, table: str) -> bool:
    """Whether `table` holds a `_delta_log` folder, committed or not (Hadoop's file system, so any scheme)."""
    jvm = spark.sparkContext._jvm
    log_dir = jvm.org.apache.hadoop.fs.Path(table.rstrip("/") + "/_delta_log")
    return bool(log_dir.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).exists(log_dir))


def delta_log(spark, table: str):
    """Delta's own handle on the table's log (a JVM `DeltaLog`, cached by Delta per path)."""
    return spark.sparkContext._jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, table)


def latest_version(spark, table: str) -> int:
    """The table's latest version (-1 where its log holds no commit yet): its log listed, no Spark job
    (`history(1)` runs one: ~0.4 s a call on the 2-vCPU VM of NOTES.md)."""
    none = spark.sparkContext._jvm.scala.Option.empty()
    return int(delta_log(spark, table).update(False, none, none).version())


def only_created(spark, table: str, version: int) -> bool:
    """Whether the table at `version` is just its creation: version 0 and no data file in it. Read from
    the commit itself (its first few actions: a data file, if any, follows the commit's metadata), with
    no Spark job: `history` runs one (~0.4 s), Delta's file count rebuilds the checksum (1-2 s)."""
    if version != 0:
        return False
    none = spark.sparkContext._jvm.scala.Option.empty()
    actions = delta_log(spark, table).getChanges(0, 0, none, False).next()._2().iterator()
    while actions.hasNext():
        if actions.next().getClass().getSimpleName() not in CREATION_ACTIONS:
            return False
    return True


# What a CREATE TABLE commit holds; anything else (an AddFile first of all) means rows may be there.
CREATION_ACTIONS = {"CommitInfo", "Protocol", "Metadata", "DomainMetadata"}


def pinned_version(
    spark, table: str, version: int | None, key: str, hint: str = "run the job that writes it", what: str = "table"
) -> int:
    """The version a run reads (the latest when none is asked for); `UserError` naming `key` when the
    path is not a Delta table or the version does not exist. `what` names the table's kind ("faces table")."""
    if not is_delta_table(spark, table):
        raise UserError(f"{key} {table} is not a Delta {what} (no _delta_log there): {hint} first, or fix {key}")
    latest = latest_version(spark, table)
    if version is not None and not 0 <= version <= latest:
        raise UserError(f"{key} {table} has no version {version} (latest is {latest})")
    return latest if version is None else version


def read_pinned(
    spark, table: str, version: int | None, key: str, hint: str = "run the job that writes it", what: str = "table"
):
    """(DataFrame at the pinned version, that version)."""
    pinned = pinned_version(spark, table, version, key, hint, what)
    return spark.read.format("delta").option("versionAsOf", pinned).load(table), pinned


def read_latest_if_any(spark, table: str):
    """The table's latest DataFrame, or None when nothing was written there yet (e.g. no runs table)."""
    return spark.read.format("delta").load(table) if is_delta_table(spark, table) else None
