"""The faces layout is typed once (Arrow); the DDL Spark gets is derived and equals the agreed columns."""

from jobs.common.schema import FACES_DDL

AGREED_FACES_DDL = (
    "face_id BIGINT, image_id STRING, source_path STRING, face_index INT, "
    "bbox STRUCT<x1: FLOAT, y1: FLOAT, x2: FLOAT, y2: FLOAT>, landmarks ARRAY<FLOAT>, "
    "det_score FLOAT, quality FLOAT, embedding ARRAY<FLOAT>, model_id STRING, status STRING, error STRING, "
    "subject_id STRING, attributes MAP<STRING, STRING>, image_width INT, image_height INT, "
    "run_id STRING, embedded_at TIMESTAMP, source_path_raw BINARY"
)


def test_faces_ddl_is_derived_from_the_arrow_schema() -> None:
    assert FACES_DDL == AGREED_FACES_DDL
