"""Every table layout is typed once (Arrow, in `jobs.common.schema`); the DDL Spark gets is derived and
equals the agreed columns."""

import pytest

from jobs.common.schema import FACES_DDL, ddl_of

AGREED_FACES_DDL = (
    "face_id BIGINT, image_id STRING, source_path STRING, face_index INT, "
    "bbox STRUCT<x1: FLOAT, y1: FLOAT, x2: FLOAT, y2: FLOAT>, landmarks ARRAY<FLOAT>, "
    "det_score FLOAT, quality FLOAT, embedding ARRAY<FLOAT>, model_id STRING, status STRING, error STRING, "
    "subject_id STRING, attributes MAP<STRING, STRING>, image_width INT, image_height INT, "
    "run_id STRING, embedded_at TIMESTAMP, source_path_raw BINARY, rotation INT, "
    "quality_components STRUCT<inter_eye_px: FLOAT, yaw_deg: FLOAT, pitch_deg: FLOAT, roll_deg: FLOAT, "
    "sharpness: FLOAT, brightness: FLOAT, contrast: FLOAT, embedding_norm: FLOAT>, quality_reasons ARRAY<STRING>"
)


def test_faces_ddl_is_derived_from_the_arrow_schema() -> None:
    assert FACES_DDL == AGREED_FACES_DDL


# The layouts each table had as a hand-written DDL string in its job before they moved here, with the
# columns added since (quality: probe_quality, probe_quality_reasons, a_quality, b_quality; the error
# budget: gallery_subjects, threshold_source, threshold_fmr_group, threshold_fmr, threshold_fmr_data,
# expected_false_candidates, and gallery_size and search in identities): a change to a table's layout must be
# deliberate (and old tables must still append).
EARLIER_DDL = {
    "MATCHES": (
        "run_id STRING, probe_face_id BIGINT, probe_image_id STRING, probe_source_path STRING, probe_subject_id "
        "STRING, probe_attributes MAP<STRING, STRING>, probe_status STRING, probe_error STRING, probe_quality FLOAT, "
        "probe_quality_reasons ARRAY<STRING>, rank INT, "
        "gallery_face_id BIGINT, gallery_subject_id STRING, score FLOAT, normalized_score FLOAT, normalization "
        "STRING, threshold DOUBLE, above_threshold BOOLEAN, model_id STRING, index_id STRING, gallery_size BIGINT, "
        "gallery_subjects BIGINT, threshold_source STRING, threshold_fmr_group STRING, threshold_fmr DOUBLE, "
        "threshold_fmr_data STRING, "
        "expected_false_candidates DOUBLE, queried_at TIMESTAMP"
    ),
    "IDENTITIES": (
        "run_id STRING, probe_face_id BIGINT, probe_image_id STRING, probe_subject_id STRING, rank INT, "
        "gallery_subject_id STRING, best_score FLOAT, best_normalized_score FLOAT, best_gallery_face_id BIGINT, "
        "candidate_faces INT, normalization STRING, threshold DOUBLE, above_threshold BOOLEAN, model_id STRING, "
        "index_id STRING, gallery_size BIGINT, gallery_subjects BIGINT, threshold_source STRING, "
        "threshold_fmr_group STRING, threshold_fmr DOUBLE, "
        "threshold_fmr_data STRING, expected_false_candidates DOUBLE, search STRING, queried_at TIMESTAMP"
    ),
    "PAIR_SCORES": (
        "run_id STRING, pair_index BIGINT, a STRING, b STRING, a_face_id BIGINT, b_face_id BIGINT, a_faces INT, "
        "b_faces INT, a_quality FLOAT, b_quality FLOAT, score FLOAT, normalized_score FLOAT, normalization STRING, "
        "status STRING, error STRING, "
        "threshold DOUBLE, above_threshold BOOLEAN, model_id STRING, compared_at TIMESTAMP"
    ),
    "AUDIT_METRICS": (
        "run_id STRING, scope STRING, metric STRING, value DOUBLE, threshold DOUBLE, target DOUBLE, "
        "group_name STRING, ci_low DOUBLE, ci_high DOUBLE, n BIGINT, data STRING, data_version BIGINT, "
        "model_id STRING, created_at TIMESTAMP"
    ),
    "CALIBRATIONS": (
        "calibration_id STRING, threshold DOUBLE, target_fmr DOUBLE, measured_fmr DOUBLE, measured_fnmr DOUBLE, "
        "model_id STRING, data_name STRING, data_table STRING, data_version BIGINT, genuine_pairs BIGINT, "
        "impostor_pairs BIGINT, resolvable BOOLEAN, record STRING, created_at TIMESTAMP"
    ),
}


@pytest.mark.parametrize("table", sorted(EARLIER_DDL))
def test_every_table_layout_is_declared_once_as_arrow(table: str) -> None:
    from jobs.common import schema

    assert getattr(schema, f"{table}_DDL") == ddl_of(getattr(schema, f"{table}_ARROW")) == EARLIER_DDL[table]
