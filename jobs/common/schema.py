"""Table layouts typed once, as Arrow schemas (what Python workers build and `mapInArrow` exchanges); the
Spark DDL strings jobs pass to Spark are derived from them, so the two cannot drift. No pyspark import."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

QUALITY_COMPONENTS_ARROW = pa.struct(
    [
        ("inter_eye_px", pa.float32()),
        ("yaw_deg", pa.float32()),
        ("pitch_deg", pa.float32()),
        ("roll_deg", pa.float32()),
        ("sharpness", pa.float32()),
        ("brightness", pa.float32()),
        ("contrast", pa.float32()),
        ("embedding_norm", pa.float32()),
    ]
)

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
        # degrees clockwise the image was turned before its faces were found (embed.retry_rotations);
        # 0 upright, null on status rows
        ("rotation", pa.int32()),
        # what the unified `quality` is made of (jobs.models.quality); null on status rows and on faces
        # embedded before Lineup measured them
        ("quality_components", QUALITY_COMPONENTS_ARROW),
        # Rekognition's words for each component beyond its limit (EXTREME_POSE, LOW_SHARPNESS, ...)
        ("quality_reasons", pa.list_(pa.string())),
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

# The error budget beside every candidate (jobs.common.thresholds.ErrorBudget), in matches and identities:
# the gallery searched, where the threshold came from, the FMR it was measured at and on what, and
# gallery_size x that FMR.
BUDGET_FIELDS = [
    ("gallery_size", pa.int64()),
    ("gallery_subjects", pa.int64()),
    ("threshold_source", pa.string()),
    ("threshold_fmr_group", pa.string()),  # the probe's group whose own rate threshold_fmr is, if any
    ("threshold_fmr", pa.float64()),
    ("threshold_fmr_data", pa.string()),
    ("expected_false_candidates", pa.float64()),
]

# matches: every candidate of every probe (and a row, rank null, per probe image without a usable face)
MATCHES_ARROW = pa.schema(
    [
        ("run_id", pa.string()),
        ("probe_face_id", pa.int64()),
        ("probe_image_id", pa.string()),
        ("probe_source_path", pa.string()),
        ("probe_subject_id", pa.string()),
        ("probe_attributes", pa.map_(pa.string(), pa.string())),
        ("probe_status", pa.string()),
        ("probe_error", pa.string()),
        ("probe_quality", pa.float32()),
        ("probe_quality_reasons", pa.list_(pa.string())),
        ("rank", pa.int32()),
        ("gallery_face_id", pa.int64()),
        ("gallery_subject_id", pa.string()),
        ("score", pa.float32()),
        ("normalized_score", pa.float32()),
        ("normalization", pa.string()),
        ("threshold", pa.float64()),
        ("above_threshold", pa.bool_()),
        ("model_id", pa.string()),
        ("index_id", pa.string()),
        *BUDGET_FIELDS,
        ("queried_at", pa.timestamp("us", tz="UTC")),
    ]
)

# identities: per probe, the best score per gallery subject, ranked
IDENTITIES_ARROW = pa.schema(
    [
        ("run_id", pa.string()),
        ("probe_face_id", pa.int64()),
        ("probe_image_id", pa.string()),
        ("probe_subject_id", pa.string()),
        ("rank", pa.int32()),
        ("gallery_subject_id", pa.string()),
        ("best_score", pa.float32()),
        ("best_normalized_score", pa.float32()),
        ("best_gallery_face_id", pa.int64()),
        ("candidate_faces", pa.int32()),
        ("normalization", pa.string()),
        ("threshold", pa.float64()),
        ("above_threshold", pa.bool_()),
        ("model_id", pa.string()),
        ("index_id", pa.string()),
        *BUDGET_FIELDS,
        ("search", pa.string()),  # faces: best face per subject; subjects: the subject's template
        ("queried_at", pa.timestamp("us", tz="UTC")),
    ]
)

# Delta keeps each data file's per-column min/max in its log, which outlives an erasure (the log is kept
# 30 days by default, and VACUUM does not touch it). Lineup's tables therefore collect statistics only on
# columns that identify no person (never a subject_id, a source path, attributes or an embedding); on
# results tables that also spares the write: 1M matches rows take ~20% less to append (5.4 s vs 6.8 s,
# local[2] on a 2-vCPU VM). Delta takes no statistics on booleans.
STATS_PROPERTY = "delta.dataSkippingStatsColumns"
MATCHES_STATS_COLUMNS = (
    "run_id,probe_face_id,probe_status,rank,gallery_face_id,score,normalized_score,model_id,index_id,queried_at"
)
IDENTITIES_STATS_COLUMNS = (
    "run_id,probe_face_id,rank,best_score,best_normalized_score,best_gallery_face_id,candidate_faces,"
    "model_id,index_id,search,queried_at"
)

# pair_scores: one row per compared pair
PAIR_SCORES_ARROW = pa.schema(
    [
        ("run_id", pa.string()),
        ("pair_index", pa.int64()),
        ("a", pa.string()),
        ("b", pa.string()),
        ("a_face_id", pa.int64()),
        ("b_face_id", pa.int64()),
        ("a_faces", pa.int32()),
        ("b_faces", pa.int32()),
        ("a_quality", pa.float32()),  # the unified quality of each side's face
        ("b_quality", pa.float32()),
        ("score", pa.float32()),
        ("normalized_score", pa.float32()),
        ("normalization", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("threshold", pa.float64()),
        ("above_threshold", pa.bool_()),
        ("model_id", pa.string()),
        ("compared_at", pa.timestamp("us", tz="UTC")),
    ]
)

# audit_metrics: one number of an audit and what qualifies it
AUDIT_METRICS_ARROW = pa.schema(
    [
        ("run_id", pa.string()),
        ("scope", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("threshold", pa.float64()),
        ("target", pa.float64()),
        ("group_name", pa.string()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("n", pa.int64()),
        ("data", pa.string()),
        ("data_version", pa.int64()),
        ("model_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

# calibrations: a stored threshold and the data and rates that qualify it
CALIBRATIONS_ARROW = pa.schema(
    [
        ("calibration_id", pa.string()),
        ("threshold", pa.float64()),
        ("target_fmr", pa.float64()),
        ("measured_fmr", pa.float64()),
        ("measured_fnmr", pa.float64()),
        ("model_id", pa.string()),
        ("data_name", pa.string()),
        ("data_table", pa.string()),
        ("data_version", pa.int64()),
        ("genuine_pairs", pa.int64()),
        ("impostor_pairs", pa.int64()),
        ("resolvable", pa.bool_()),
        ("record", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

# erasures (append-only, digests only). `phase`: "registered" (in force from now on, before any row is
# deleted), "completed" (with what was deleted and the verification), "lifted" (`lifts` names the
# erasure no longer in force).
ERASURES_ARROW = pa.schema(
    [
        ("erasure_id", pa.string()),
        ("run_id", pa.string()),
        ("erased_at", pa.timestamp("us", tz="UTC")),
        ("user", pa.string()),
        ("phase", pa.string()),
        ("selector_kind", pa.string()),
        ("selector_sha256", pa.list_(pa.string())),
        ("model_id", pa.string()),
        ("older_than", pa.string()),
        (
            "tables",
            pa.list_(
                pa.struct(
                    [
                        ("role", pa.string()),
                        ("path", pa.string()),
                        ("version_before", pa.int64()),
                        ("version_after", pa.int64()),
                        ("rows_deleted", pa.int64()),
                    ]
                )
            ),
        ),
        ("indexes", pa.list_(pa.struct([("path", pa.string()), ("vectors_removed", pa.int64())]))),
        ("purged_history", pa.bool_()),
        ("retention_hours", pa.float64()),
        ("verified", pa.bool_()),
        ("findings", pa.string()),
        ("face_id_sha256", pa.list_(pa.string())),
        ("embedding_sha256", pa.list_(pa.string())),
        ("image_sha256", pa.list_(pa.string())),
        ("subject_sha256", pa.list_(pa.string())),
        ("lifts", pa.string()),
        ("reason", pa.string()),
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
MATCHES_DDL = ddl_of(MATCHES_ARROW)
IDENTITIES_DDL = ddl_of(IDENTITIES_ARROW)
PAIR_SCORES_DDL = ddl_of(PAIR_SCORES_ARROW)
AUDIT_METRICS_DDL = ddl_of(AUDIT_METRICS_ARROW)
CALIBRATIONS_DDL = ddl_of(CALIBRATIONS_ARROW)
ERASURES_DDL = ddl_of(ERASURES_ARROW)


def to_faces_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Row dicts -> one Arrow batch in the faces-table layout."""
    return pa.RecordBatch.from_pylist(rows, schema=FACES_ARROW)
