"""Table layouts typed once, as Arrow schemas (what Python workers build and `mapInArrow` exchanges); the
Spark DDL strings jobs pass to Spark are derived from them, so the two cannot drift. No pyspark import."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

FACES_ARROW = pa.schema(
    [
        ("face_id", pa.int64()),
        ("image_id", pa.string()),
        ("source_path", pa.string()),
        ("face_index", pa.int32()),
        ("bbox", pa.struct([("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()), ("y2", pa.float32())])),
        ("landmarks", pa.list_(pa.float32())),
        ("det_score", pa.float32()),
        ("quality", pa.float32()),
        ("embedding", pa.list_(pa.float32())),
        ("model_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("subject_id", pa.string()),
        ("attributes", pa.map_(pa.string(), pa.string())),
        ("image_width", pa.int32()),
        ("image_height", pa.int32()),
        ("run_id", pa.string()),
        ("embedded_at", pa.timestamp("us", tz="UTC")),
        # the exact bytes of source_path where it is not UTF-8 (source_path then escapes them as \xNN)
        ("source_path_raw", pa.binary()),
    ]
)

_VERSIONED = pa.struct([("name", pa.string()), ("path", pa.string()), ("version", pa.int64())])
RUNS_ARROW = pa.schema(
    [
        ("run_id", pa.string()),
        ("job", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("user", pa.string()),
        ("host", pa.string()),
        ("params", pa.string()),
        ("inputs", pa.list_(_VERSIONED)),
        ("outputs", pa.list_(_VERSIONED)),
        ("counts", pa.map_(pa.string(), pa.int64())),
        ("threshold", pa.float64()),
        ("threshold_source", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)

_SCALARS = {
    pa.int64(): "BIGINT",
    pa.int32(): "INT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.string(): "STRING",
    pa.binary(): "BINARY",
    pa.bool_(): "BOOLEAN",
}


def spark_type(arrow_type: pa.DataType) -> str:
    """The Spark SQL type of an Arrow type (the subset our tables use).

    >>> spark_type(pa.map_(pa.string(), pa.list_(pa.float32())))
    'MAP<STRING, ARRAY<FLOAT>>'
    """
    if arrow_type in _SCALARS:
        return _SCALARS[arrow_type]
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    if pa.types.is_list(arrow_type):
        return f"ARRAY<{spark_type(arrow_type.value_type)}>"
    if pa.types.is_map(arrow_type):
        return f"MAP<{spark_type(arrow_type.key_type)}, {spark_type(arrow_type.item_type)}>"
    if pa.types.is_struct(arrow_type):
        fields = ", ".join(f"{f.name}: {spark_type(f.type)}" for f in arrow_type)
        return f"STRUCT<{fields}>"
    raise TypeError(f"no Spark type for Arrow {arrow_type}")


def ddl_of(schema: pa.Schema) -> str:
    """A Spark DDL string (`name TYPE, ...`) for an Arrow schema.

    >>> ddl_of(pa.schema([("face_id", pa.int64()), ("embedding", pa.list_(pa.float32()))]))
    'face_id BIGINT, embedding ARRAY<FLOAT>'
    """
    return ", ".join(f"{field.name} {spark_type(field.type)}" for field in schema)


FACES_DDL = ddl_of(FACES_ARROW)
RUNS_DDL = ddl_of(RUNS_ARROW)


def to_faces_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Row dicts -> one Arrow batch in the faces-table layout."""
    return pa.RecordBatch.from_pylist(rows, schema=FACES_ARROW)
