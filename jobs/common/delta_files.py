"""Committing Parquet files that were written outside Spark (by Python workers) to a Delta table, through
Delta's own optimistic transaction: the same log entry, checkpoints and conflict checks a Spark write
gets, without the rows passing through the JVM.

The transaction reads the whole table, so a commit that another writer's commit overtook fails with
Delta's conflict error instead of landing beside it: the caller then falls back to a MERGE, which sees
the other writer's rows. Only a table in the plain layout Lineup creates takes files this way: a
partitioned table, column mapping, constraints, generated or identity columns need Spark's writer.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from jobs.common.commits import is_commit_conflict
from jobs.common.delta import delta_log, delta_rs_uri, has_delta_log
from jobs.common.spark import jvm_of
from jobs.common.storage import is_remote, upath, write_atomically

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Table properties and column metadata that a file written outside Spark would not honour.
_WRITER_ONLY_PROPERTIES = ("delta.columnMapping.mode", "delta.constraints.")
_WRITER_ONLY_COLUMN_METADATA = ("delta.generationExpression", "delta.identity.", "delta.invariants")


@dataclass(frozen=True)
class Appended:
    """A commit's outcome: the version it created, or why the files were not committed (then nothing was)."""

    version: int | None
    refused: str | None = None


def layout_refusal(metadata: dict, columns: Collection[str]) -> str | None:
    """Why files in the `columns` layout cannot be added to a table with this Delta `metaData` action, or
    None when they can.

    >>> field = {"name": "face_id", "type": "long", "nullable": True, "metadata": {}}
    >>> schema = json.dumps({"type": "struct", "fields": [field]})
    >>> layout_refusal({"schemaString": schema, "partitionColumns": [], "configuration": {}}, ["face_id"])
    >>> layout_refusal({"schemaString": schema, "partitionColumns": ["face_id"], "configuration": {}}, ["face_id"])
    'the table is partitioned'
    >>> layout_refusal({"schemaString": schema, "partitionColumns": [], "configuration": {}}, ["face_id", "x"])
    'the table has other columns than the files'
    """
    if metadata.get("partitionColumns"):
        return "the table is partitioned"
    properties = metadata.get("configuration") or {}
    for key, value in properties.items():
        if key.startswith(_WRITER_ONLY_PROPERTIES) and not (key == "delta.columnMapping.mode" and value == "none"):
            return f"the table sets {key}"
    fields = json.loads(metadata["schemaString"])["fields"]
    if sorted(f["name"] for f in fields) != sorted(columns):
        return "the table has other columns than the files"
    for field in fields:
        if any(key.startswith(_WRITER_ONLY_COLUMN_METADATA) for key in field.get("metadata", {})):
            return f"column {field['name']} has writer-side rules"
    return None


def commit_files(
    spark: SparkSession,
    table_path: str,
    adds: list[str],
    columns: Collection[str],
    since_version: int | None = None,
    own_versions: Collection[int] = (),
) -> Appended:
    """Commit the files of `adds` (Delta add actions as JSON) as one WRITE (append), unless the table
    changed since `since_version` by any commit but `own_versions`, or its layout refuses them. Without
    `since_version` the append is blind: other writers' appends land beside it (rows that cannot clash,
    such as runs rows keyed by a fresh run id)."""
    jvm = jvm_of(spark)
    delta = jvm.org.apache.spark.sql.delta
    txn = delta_log(spark, table_path).startTransaction()
    read_version = int(txn.readVersion())
    if read_version < 0:
        return Appended(None, "the table has no commit yet")
    if since_version is not None:
        foreign = [v for v in range(since_version + 1, read_version + 1) if v not in own_versions]
        if foreign:
            return Appended(None, f"another writer committed version {foreign[0]} during this run")
    refusal = layout_refusal(json.loads(txn.metadata().json())["metaData"], columns)
    if refusal:
        return Appended(None, refusal)
    if since_version is not None:
        txn.readWholeTable()  # a file another writer adds before this commit is a conflict, not a neighbour
    actions = jvm.java.util.ArrayList()
    for add in adds:
        actions.add(delta.actions.Action.fromJson(add))
    none = jvm.scala.Option.empty()
    operation = getattr(delta, "DeltaOperations$Write")(
        jvm.org.apache.spark.sql.SaveMode.valueOf("Append"), none, none, none, none, none, none, none, none
    )
    try:
        version = txn.commit(jvm.scala.jdk.javaapi.CollectionConverters.asScala(actions).toSeq(), operation)
    except Exception as error:
        if is_commit_conflict(error):
            return Appended(None, "another writer's commit overtook this one")
        raise
    return Appended(int(version))


def append_batch(spark: SparkSession, table_path: str, batch: pa.RecordBatch) -> int | None:
    """Append `batch` to an existing table as one file written here and a blind commit: the version, or
    None (nothing written) when the table does not exist yet or needs Spark's writer."""

    if not has_delta_log(spark, table_path):
        return None
    add = write_data_file(table_path, batch)
    appended = commit_files(spark, table_path, [add], batch.schema.names)
    if appended.version is None:
        (upath(table_path) / json.loads(add)["add"]["path"]).unlink()
    return appended.version


def append_on_driver(table_path: str, batch: pa.RecordBatch) -> int | None:
    """Append `batch` to an existing local table with delta-rs (no JVM: a fresh one's first Delta commit
    costs 2-3 s), as a blind append: the new version, or None (nothing committed) where Spark must write
    instead: a remote table (on S3 delta-rs's commits do not exclude Spark's), no table yet, or a
    protocol or schema delta-rs refuses."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import DeltaError

    if is_remote(table_path) or not (upath(delta_rs_uri(table_path)) / "_delta_log").is_dir():
        return None
    try:
        table = DeltaTable(delta_rs_uri(table_path))
        write_deltalake(table, batch, mode="append")
    except (DeltaError, OSError) as error:
        log.info("%s: not appended by delta-rs (%s), appended through Spark", table_path, str(error)[:200])
        return None
    return int(table.version())


def write_data_file(table_path: str, batch: pa.RecordBatch, stats_columns: tuple[str, ...] = ()) -> str:
    """Write `batch` as a new Parquet file in the table's folder (not yet part of the table); its add action."""
    import pyarrow.parquet as pq

    name = f"part-{uuid.uuid4()}-c000.snappy.parquet"  # the name Spark's writer would give it
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_batches([batch]), sink, compression="snappy")
    data = sink.getvalue()
    write_atomically(upath(table_path) / name, memoryview(data))
    return add_action(name, data.size, batch, stats_columns)


def add_action(name: str, size: int, batch: pa.RecordBatch, stats_columns: tuple[str, ...] = ()) -> str:
    """The Delta add action of a file holding `batch`, with the statistics readers skip files by: the row
    count, and the range and null count of each of `stats_columns` (scalar columns).

    >>> batch = pa.RecordBatch.from_pydict({"face_id": pa.array([7, -3, 12], pa.int64())})
    >>> json.loads(json.loads(add_action("part-x.parquet", 10, batch, ("face_id",)))["add"]["stats"])
    {'numRecords': 3, 'minValues': {'face_id': -3}, 'maxValues': {'face_id': 12}, 'nullCount': {'face_id': 0}}
    """
    import pyarrow.compute as pc

    stats: dict[str, Any] = {"numRecords": batch.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for column in stats_columns:
        values = batch.column(column)
        bounds = pc.min_max(values).as_py()
        if bounds["min"] is not None:
            stats["minValues"][column], stats["maxValues"][column] = bounds["min"], bounds["max"]
        stats["nullCount"][column] = values.null_count
    return json.dumps(
        {
            "add": {
                "path": name,
                "partitionValues": {},
                "size": size,
                "modificationTime": int(time.time() * 1000),
                "dataChange": True,
                "stats": json.dumps(stats, separators=(",", ":")),
            }
        },
        separators=(",", ":"),
    )
