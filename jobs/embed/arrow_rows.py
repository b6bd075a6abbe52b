"""Rows -> Arrow record batches in the faces-table layout (what Spark's mapInArrow exchanges)."""

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


def to_record_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=FACES_ARROW)
