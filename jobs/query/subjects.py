"""Search by person (`query.search=subjects`, Rekognition's SearchUsersByImage): each probe against the
index generation's identity templates, exactly, on the executors (templates loaded once per Python
worker, checked against the manifest's sha256); the rows go straight to the identities table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from jobs.common.errors import UserError
from jobs.common.schema import ddl_of
from jobs.common.thresholds import ErrorBudget, Threshold
from jobs.shards.manifest import Manifest
from jobs.shards.templates import load_templates

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SUBJECT_CANDIDATES_ARROW = pa.schema(
    [
        ("probe_face_id", pa.int64()),
        ("rank", pa.int32()),
        ("gallery_subject_id", pa.string()),
        ("best_score", pa.float32()),
        ("candidate_faces", pa.int32()),
    ]
)


def check_templates(manifest: Manifest, index_dir: str, threshold: Threshold) -> None:
    if not manifest.templates_file:
        raise UserError(
            f"query.search asks for subjects, but index {index_dir} has no templates: rebuild it with "
            "index.templates=true (or search faces)"
        )
    if threshold.normalization is not None:
        raise UserError(
            "query.search=subjects takes a raw-score threshold: this calibration normalizes scores per face; "
            "use a calibration without --normalization, or search faces"
        )


def make_template_runner(index_dir: str, manifest: Manifest, k: int) -> Callable[[Iterator], Iterator]:
    """mapInArrow over (probe_face_id, embedding) -> the k best templates per probe."""

    def run(batches: Iterator) -> Iterator:
        templates = load_templates(index_dir, manifest)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = batch.column(0).to_numpy(zero_copy_only=False)
            flat = batch.column(1).flatten().to_numpy(zero_copy_only=False)
            scores, rows = templates.search(flat.astype(np.float32).reshape(len(ids), -1), k)
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(np.repeat(ids, rows.shape[1]), pa.int64()),
                    pa.array(np.tile(np.arange(1, rows.shape[1] + 1, dtype=np.int32), len(ids)), pa.int32()),
                    pa.array(templates.subjects[rows.reshape(-1)].tolist(), pa.string()),
                    pa.array(scores.reshape(-1).astype(np.float32), pa.float32()),
                    pa.array(templates.faces[rows.reshape(-1)].astype(np.int32), pa.int32()),
                ],
                schema=SUBJECT_CANDIDATES_ARROW,
            )

    return run


def subject_identities(
    ok_probes: DataFrame,
    index_dir: str,
    manifest: Manifest,
    k: int,
    partitions: int,
    threshold: Threshold,
    run_id: str,
    budget: ErrorBudget,
) -> DataFrame:
    """Identities rows (`search = subjects`) for every searched probe: its k best templates."""
    from pyspark.sql import functions as F

    probes = ok_probes.select(F.col("face_id").alias("probe_face_id"), "embedding").dropDuplicates(["probe_face_id"])
    slim = manifest.model_copy(update={"superseded": [], "erasures": [], "shards": []})
    found = probes.repartition(partitions).mapInArrow(
        make_template_runner(index_dir, slim, k), ddl_of(SUBJECT_CANDIDATES_ARROW)
    )
    info = ok_probes.select(
        F.col("face_id").alias("probe_face_id"),
        F.col("image_id").alias("probe_image_id"),
        F.col("subject_id").alias("probe_subject_id"),
    ).dropDuplicates(["probe_face_id"])
    value = F.lit(threshold.value).cast("double")
    # The threshold's FMR was measured on face pairs; per template it is stated as such (templates x FMR).
    fmr = F.lit(budget.threshold_fmr).cast("double")
    return found.join(info, "probe_face_id").select(
        F.lit(run_id).alias("run_id"),
        "probe_face_id",
        "probe_image_id",
        "probe_subject_id",
        "rank",
        "gallery_subject_id",
        "best_score",
        F.lit(None).cast("float").alias("best_normalized_score"),
        F.lit(None).cast("bigint").alias("best_gallery_face_id"),
        "candidate_faces",
        F.lit(None).cast("string").alias("normalization"),
        value.alias("threshold"),
        (F.col("best_score") >= value if threshold.value is not None else F.lit(None).cast("boolean")).alias(
            "above_threshold"
        ),
        F.lit(manifest.model_id).alias("model_id"),
        F.lit(manifest.index_id).alias("index_id"),
        F.lit(budget.gallery_size).cast("bigint").alias("gallery_size"),
        F.lit(manifest.templates).cast("bigint").alias("gallery_subjects"),
        F.lit(budget.threshold_source).alias("threshold_source"),
        F.lit(None).cast("string").alias("threshold_fmr_group"),
        fmr.alias("threshold_fmr"),
        F.lit(budget.threshold_fmr_data).cast("string").alias("threshold_fmr_data"),
        (F.lit(manifest.templates).cast("double") * fmr).alias("expected_false_candidates"),
        F.lit("subjects").alias("search"),
        F.current_timestamp().alias("queried_at"),
    )
