"""Reading Delta tables at a pinned version: the one place a configured table is opened for reading.

Only the user's mistakes become a `UserError` naming the configuration key: no such path, a path that is
not a Delta table, a version that does not exist. Anything else (a JVM failure, a storage outage) keeps
its own exception and traceback: it is not the user's input that is wrong.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs.common.errors import UserError
from jobs.common.spark import jvm_of
from jobs.common.storage import is_remote, s3_endpoint, upath

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def is_delta_table(spark: SparkSession, table: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, table))


def has_delta_log(spark: SparkSession, table: str) -> bool:
    """Whether `table` holds a `_delta_log` folder, committed or not (Hadoop's file system, so any scheme)."""
    jvm = jvm_of(spark)
    log_dir = jvm.org.apache.hadoop.fs.Path(table.rstrip("/") + "/_delta_log")
    return bool(log_dir.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).exists(log_dir))


def delta_log(spark: SparkSession, table: str) -> Any:  # the JVM's DeltaLog
    """Delta's own handle on the table's log (a JVM `DeltaLog`, cached by Delta per path)."""
    return jvm_of(spark).org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, table)


def latest_version(spark: SparkSession, table: str) -> int:
    """The table's latest version (-1 where its log holds no commit yet): its log listed, no Spark job
    (`history(1)` runs one: ~0.4 s a call on a 2-vCPU, 24 GiB VM)."""
    none = jvm_of(spark).scala.Option.empty()
    return int(delta_log(spark, table).update(False, none, none).version())


def only_created(spark: SparkSession, table: str, version: int) -> bool:
    """Whether the table at `version` is just its creation: version 0 and no data file in it. Read from
    the commit itself (its first few actions: a data file, if any, follows the commit's metadata), with
    no Spark job: `history` runs one (~0.4 s), Delta's file count rebuilds the checksum (1-2 s)."""
    if version != 0:
        return False
    none = jvm_of(spark).scala.Option.empty()
    actions = delta_log(spark, table).getChanges(0, 0, none, False).next()._2().iterator()
    while actions.hasNext():
        if actions.next().getClass().getSimpleName() not in CREATION_ACTIONS:
            return False
    return True


# What a CREATE TABLE commit holds; anything else (an AddFile first of all) means rows may be there.
CREATION_ACTIONS = {"CommitInfo", "Protocol", "Metadata", "DomainMetadata"}


def pinned_version(
    spark: SparkSession,
    table: str,
    version: int | None,
    key: str,
    hint: str = "run the job that writes it",
    what: str = "table",
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
    spark: SparkSession,
    table: str,
    version: int | None,
    key: str,
    hint: str = "run the job that writes it",
    what: str = "table",
) -> tuple[DataFrame, int]:
    """(DataFrame at the pinned version, that version)."""
    pinned = pinned_version(spark, table, version, key, hint, what)
    return spark.read.format("delta").option("versionAsOf", pinned).load(table), pinned


def read_latest_if_any(spark: SparkSession, table: str) -> DataFrame | None:
    """The table's latest DataFrame, or None when nothing was written there yet (e.g. no runs table)."""
    return spark.read.format("delta").load(table) if is_delta_table(spark, table) else None


@dataclass(frozen=True)
class DriverSnapshot:
    """A Delta table at one version, read in this process by delta-rs: no JVM, no Spark job. A fresh JVM
    spends 5-20 s compiling Spark's Delta reader before its first answer (a 2-vCPU VM); this
    answers a small table's questions in milliseconds."""

    version: int
    columns: frozenset[str]
    files: int
    rows: int
    dataset: Any  # pyarrow.dataset.Dataset over the table's data files at `version`, in its schema
    properties: dict[str, str] = field(default_factory=dict)  # the table's `delta.*` configuration

    def select(self, columns: list[str], where: Any) -> Any:
        """The `columns` of the rows matching `where` (a pyarrow.compute expression), as an Arrow table;
        only matching rows are kept in memory."""
        return self.dataset.to_table(columns=columns, filter=where)


def driver_snapshot(table: str, version: int | None = None) -> DriverSnapshot | None:
    """The table (at `version`, else its latest) read by delta-rs, or None (logged) where only Spark's
    reader gives the right answer: no committed table there yet, a reader protocol above 1 (column
    mapping, deletion vectors: delta-rs would read the wrong rows or refuse), a partitioned table, a data
    file without a row count, or a location delta-rs cannot open with this process's credentials."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    try:
        opened = DeltaTable(delta_rs_uri(table), version=version, storage_options=delta_rs_options(table))
        refusal = _driver_refusal(opened)
        if refusal:
            log.info("%s: %s, read through Spark", table, refusal)
            return None
        rows = opened.get_add_actions(flatten=True).column("num_records").to_pylist()
        if any(count is None for count in rows):
            log.info("%s: a data file without a row count, read through Spark", table)
            return None
        schema = pa.schema(opened.schema().to_arrow())
        files = opened.file_uris()
        # The file list, not delta-rs's own dataset: that one turns a column without file statistics
        # (Lineup's workers record face_id's only) into `column >= null`, and any filter on it then
        # matches nothing (deltalake 1.6.6).
        if is_remote(table):
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            filesystem = PyFileSystem(FSSpecHandler(upath(table).fs))
            files = [uri.split("://", 1)[1] for uri in files]
            dataset = ds.dataset(files, schema=schema, format="parquet", filesystem=filesystem)
        else:
            dataset = ds.dataset(files, schema=schema, format="parquet")
        columns = frozenset(schema.names)
        properties = dict(opened.metadata().configuration or {})
        return DriverSnapshot(int(opened.version()), columns, len(files), sum(rows), dataset, properties)
    except (DeltaError, OSError) as error:
        log.info("%s: not read by delta-rs (%s), read through Spark", table, str(error).splitlines()[0][:200])
        return None


def _driver_refusal(opened: Any) -> str | None:
    """Why delta-rs's file list is not the table's rows, or None when it is."""
    reader_version = opened.protocol().min_reader_version
    if reader_version != 1:
        return f"reader protocol {reader_version} (column mapping or deletion vectors)"
    if opened.metadata().partition_columns:
        return "a partitioned table"
    return None


def delta_rs_uri(table: str) -> str:
    """The table's location as delta-rs names it (S3 is `s3://`, not Hadoop's `s3a://`).

    >>> delta_rs_uri("s3a://bucket/faces"), delta_rs_uri("file:///data/faces"), delta_rs_uri("/data/faces")
    ('s3://bucket/faces', '/data/faces', '/data/faces')
    """
    if table.startswith("s3a://"):
        return "s3://" + table[len("s3a://") :]
    return table[len("file://") :] if table.startswith("file://") else table


def delta_rs_options(table: str) -> dict[str, str]:
    """delta-rs's storage options for an S3 table: the endpoint fsspec and Spark use (AWS_ENDPOINT_URL),
    plain HTTP where that endpoint is one; credentials and region come from the environment as usual."""

    if not table.startswith(("s3://", "s3a://")):
        return {}
    endpoint = s3_endpoint()
    options = {"AWS_ENDPOINT_URL": endpoint} if endpoint else {}
    if endpoint and endpoint.startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    return options
