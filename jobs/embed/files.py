"""Executor side of the embed job's commit: a task's faces rows written by the Python worker itself, as
one Parquet file inside the faces table's folder, described by the Delta `add` action that commits it.

Why the worker writes: handing the rows to the JVM instead (Arrow -> Spark rows -> cached chunk -> MERGE
-> Parquet) cost the driver JVM about an eighth of the workers' CPU on a 2-core machine, and the last
chunk's MERGE ran after all embedding was done. A file written here crosses no process boundary; only its
`add` action and four small columns per row go back to the driver (`WRITTEN_ARROW`).

A file is not part of the table until the driver commits its `add` action (`jobs.embed.commit`): a task
retried, a run killed before its commit, or a chunk merged instead leaves files no reader ever sees
(Delta's VACUUM removes them, as it removes a failed Spark write's).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pyarrow as pa

from jobs.common.schema import ddl_of

# One row per faces row written; `add` (the file's Delta add action, JSON) is set on each file's first row.
WRITTEN_ARROW = pa.schema(
    [
        ("file", pa.string()),
        ("add", pa.string()),
        ("face_id", pa.int64()),
        ("image_id", pa.string()),
        ("source_path", pa.string()),
        ("source_path_raw", pa.binary()),
        ("status", pa.string()),
    ]
)
WRITTEN_DDL = ddl_of(WRITTEN_ARROW)


def write_faces_file(table_path: str, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Write `batch` (faces-table layout) as a new Parquet file in the table's folder; its rows' small
    columns and the file's add action, in the `WRITTEN_ARROW` layout."""
    import pyarrow.parquet as pq

    from jobs.common.storage import upath, write_atomically

    name = f"part-{uuid.uuid4()}-c000.snappy.parquet"  # the name Spark's writer would give it
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_batches([batch]), sink, compression="snappy")
    data = sink.getvalue()
    write_atomically(upath(table_path) / name, memoryview(data))
    add = add_action(name, data.size, batch)
    rows = batch.num_rows
    return pa.RecordBatch.from_arrays(
        [
            pa.array([name] * rows, pa.string()),
            pa.array([add] + [None] * (rows - 1), pa.string()),
            batch.column("face_id"),
            batch.column("image_id"),
            batch.column("source_path"),
            batch.column("source_path_raw"),
            batch.column("status"),
        ],
        schema=WRITTEN_ARROW,
    )


def add_action(name: str, size: int, batch: pa.RecordBatch) -> str:
    """The Delta add action of a file holding `batch`, with the statistics readers skip files by: the row
    count, and the range of `face_id` (what erasure and lookups filter on).

    >>> batch = pa.RecordBatch.from_pydict({"face_id": pa.array([7, -3, 12], pa.int64())})
    >>> json.loads(json.loads(add_action("part-x.parquet", 10, batch))["add"]["stats"])
    {'numRecords': 3, 'minValues': {'face_id': -3}, 'maxValues': {'face_id': 12}, 'nullCount': {'face_id': 0}}
    """
    import pyarrow.compute as pc

    face_ids = batch.column("face_id")
    bounds = pc.min_max(face_ids).as_py()
    stats: dict[str, Any] = {"numRecords": batch.num_rows}
    if bounds["min"] is not None:
        stats.update(minValues={"face_id": bounds["min"]}, maxValues={"face_id": bounds["max"]})
    stats["nullCount"] = {"face_id": face_ids.null_count}
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
