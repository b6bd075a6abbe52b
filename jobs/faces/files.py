"""Executor side of the embed job's commit: a task's faces rows written by the Python worker itself, as
one Parquet file inside the faces table's folder, described by the Delta `add` action that commits it.

Why the worker writes: handing the rows to the JVM instead (Arrow -> Spark rows -> cached chunk -> MERGE
-> Parquet) cost the driver JVM about an eighth of the workers' CPU on a 2-core machine, and the last
chunk's MERGE ran after all embedding was done. A file written here crosses no process boundary; only its
`add` action and four small columns per row go back to the driver (`WRITTEN_ARROW`).

A file is not part of the table until the driver commits its `add` action (`jobs.faces.commit`): a task
retried, a run killed before its commit, or a chunk merged instead leaves files no reader ever sees
(Delta's VACUUM removes them, as it removes a failed Spark write's).
"""

from __future__ import annotations

import json

import pyarrow as pa

from jobs.common.delta_files import write_data_file
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

    add = write_data_file(table_path, batch, ("face_id",))  # face_id: what erasure and lookups filter on
    name = json.loads(add)["add"]["path"]
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
