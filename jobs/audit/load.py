"""Driver side of the audit: what is measured, read at pinned versions. Labelled faces (status ok, one
model) come to the driver as numpy; a query run's matches come as one row per candidate, with the
gallery's enrolled subjects from the faces table at the version the run's index pinned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from pyspark.errors import AnalysisException

from jobs.audit import identification as ident
from jobs.audit.config import AuditConfig
from jobs.common.delta import pinned_version, read_latest_if_any, read_pinned
from jobs.common.errors import UserError
from jobs.common.storage import upath
from jobs.shards.gallery import indexed_rows
from jobs.shards.manifest import Manifest, read_manifest

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession


@dataclass
class Labelled:
    vectors: np.ndarray
    subjects: list[str | None]
    attributes: list[dict[str, str]]
    model_id: str
    table: str
    version: int
    name: str
    qualities: np.ndarray | None = None  # unified quality per face; None where any face was not measured


def load_labelled(spark: SparkSession, config: AuditConfig) -> Labelled:
    """The labelled faces (status ok, one model) at a pinned version, on the driver as numpy."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    settings = config.audit.labelled
    table = config.locations.table(settings.faces_table, "faces")
    version = pinned_version(spark, table, settings.faces_version, "audit.labelled.faces_table")
    frame = spark.read.format("delta").option("versionAsOf", version).load(table).where(F.col("status") == "ok")
    if settings.where:
        try:
            frame = frame.where(settings.where)
            frame.schema  # noqa: B018 - a bad filter must fail here, with its name
        except AnalysisException as error:  # no such path, unreadable format, bad filter: the user's to fix
            raise UserError(f"audit.labelled.where {settings.where!r}: {str(error).splitlines()[0]}") from None
    models = sorted(r.model_id for r in frame.select("model_id").distinct().collect())
    if not models:
        raise UserError(f"audit.labelled.faces_table {table} v{version} has no faces (status ok) to audit")
    if settings.model_id is None and len(models) > 1:
        raise UserError(f"audit.labelled.faces_table {table} mixes models {models}: set audit.labelled.model_id")
    model_id = settings.model_id or models[0]
    frame = frame.where(F.col("model_id") == model_id)
    if settings.face_per_image != "all":
        # A group photo's bystanders are not the labelled person: keep one face per image, the most
        # confident one, or the one nearest the centre (LFW's convention: the photo is about that person).
        centre_distance = F.hypot(
            (F.col("bbox.x1") + F.col("bbox.x2")) / 2 - F.col("image_width") / 2,
            (F.col("bbox.y1") + F.col("bbox.y2")) / 2 - F.col("image_height") / 2,
        )
        key = F.col("det_score").desc_nulls_last() if settings.face_per_image == "most_confident" else centre_distance
        best = Window.partitionBy("image_id").orderBy(key, F.col("face_index"))
        frame = frame.withColumn("_n", F.row_number().over(best)).where("_n = 1").drop("_n")
    measured = "quality_reasons" in frame.columns
    quality = F.when(F.col("quality_reasons").isNotNull(), F.col("quality")) if measured else F.lit(None)
    columns = ("face_id", "subject_id", "attributes", "embedding")
    rows = frame.select(*columns, quality.cast("double").alias("measured_quality")).orderBy("face_id").toArrow()
    flat = rows.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    attributes = [dict(a) if a else {} for a in rows.column("attributes").to_pylist()]
    qualities = rows.column("measured_quality")
    return Labelled(
        vectors=flat.astype(np.float32).reshape(rows.num_rows, -1),
        subjects=rows.column("subject_id").to_pylist(),
        attributes=attributes,
        model_id=model_id,
        table=table,
        version=version,
        name=settings.name or table,
        qualities=None if qualities.null_count else qualities.to_numpy(zero_copy_only=False).astype(np.float64),
    )


def load_searches(spark: SparkSession, config: AuditConfig) -> tuple[ident.Searches, dict[str, Any]]:
    """A query run's matches reduced to searches; the gallery's subjects come from the index manifest's
    faces table at the version the index pinned."""
    from pyspark.sql import functions as F

    settings = config.audit.identification
    table = config.locations.table(settings.matches_table, "matches")
    matches, _ = read_pinned(spark, table, None, "audit.identification.matches_table", "run `lineup query`")
    if "queried_at" not in matches.columns:
        raise UserError(f"audit.identification.matches_table {table} is not a matches table; run `lineup query`")
    latest = matches.orderBy(F.col("queried_at").desc()).select("run_id").first()
    if latest is None:
        raise UserError(f"audit.identification.matches_table {table} holds no query runs; run `lineup query`")
    run_id = settings.run_id or latest["run_id"]
    run = matches.where((F.col("run_id") == run_id) & (F.col("probe_status") == "ok"))
    selected = run.select(
        "probe_face_id",
        "probe_subject_id",
        "probe_attributes",
        "rank",
        "gallery_face_id",
        "gallery_subject_id",
        "score",
        (F.col("probe_quality") if "probe_quality" in run.columns else F.lit(None))
        .cast("double")
        .alias("probe_quality"),
    )
    frame = cast("pd.DataFrame", selected.toPandas())
    if frame.empty:
        raise UserError(f"run {run_id} has no searched probes in {table}")
    index_row = run.select("index_id", "model_id", "gallery_size").first()
    assert index_row is not None  # the run has searched probes (above)
    index_dir = settings.index_dir
    if index_dir is None:
        runs_frame = read_latest_if_any(spark, config.runs_table_path())
        runs = runs_frame.where(F.col("run_id") == run_id).collect() if runs_frame is not None else []
        index_dir = next((i.path for r in runs for i in r.inputs if i.name == "index"), None)
    if index_dir is None:
        raise UserError(
            f"run {run_id} is not in the runs table {config.runs_table_path()}: set audit.identification.index_dir"
        )
    manifest = read_manifest(upath(index_dir))
    enrolled = _enrolled_subjects(spark, manifest)
    frame["probe_attributes"] = [dict(a) if a is not None else {} for a in frame["probe_attributes"]]
    unlabelled = int(frame.loc[frame["probe_subject_id"].isna(), "probe_face_id"].nunique())
    info = {
        "matches_table": table,
        "run_id": run_id,
        "index_id": index_row.index_id,
        "model_id": index_row.model_id,
        "gallery_size": int(index_row.gallery_size),
        "gallery_subjects": len(enrolled),
        "gallery_table": manifest.faces_table,
        "gallery_version": manifest.faces_version,
        "unlabelled_probes_left_out": unlabelled,
    }
    return ident.searches_from_matches(frame, enrolled), info


def _enrolled_subjects(spark: SparkSession, manifest: Manifest) -> set[str]:
    """Subjects with at least one face in the index (its pinned version, model and quality floor): a
    subject whose faces a quality floor kept out cannot be found, so its probes are not mated."""
    from pyspark.sql import functions as F

    gallery, _ = read_pinned(spark, manifest.faces_table, manifest.faces_version, "the index's faces_table")
    labelled = indexed_rows(gallery, manifest).where(F.col("subject_id").isNotNull())
    return {row.subject_id for row in labelled.select("subject_id").distinct().collect()}
