"""Table schemas as Spark DDL strings, so modules that describe rows need not import pyspark."""

FACES_DDL = (
    "face_id BIGINT, image_id STRING, source_path STRING, face_index INT, "
    "bbox STRUCT<x1: FLOAT, y1: FLOAT, x2: FLOAT, y2: FLOAT>, landmarks ARRAY<FLOAT>, "
    "det_score FLOAT, quality FLOAT, embedding ARRAY<FLOAT>, model_id STRING, status STRING, error STRING, "
    "subject_id STRING, attributes MAP<STRING, STRING>, image_width INT, image_height INT, "
    "run_id STRING, embedded_at TIMESTAMP, source_path_raw BINARY"
)
