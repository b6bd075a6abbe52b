"""Identity templates (Rekognition's user vectors): one vector per gallery subject, the normalised
quality-weighted mean of the subject's face embeddings, kept in one file of an index generation.

A template file is an Arrow IPC file (`templates.gG.arrow`: subject_id, faces, template) named with its
sha256 by the manifest, like a shard. Its search is exact (a matrix product): a subject count that fits a
worker's memory (a million 128-d templates take 512 MB). The templates are computed on the executors
(`subject_templates`, a grouped Arrow UDF per subject); the file is written by the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from jobs.common.storage import AnyPath
from jobs.shards.files import load_once, write_arrow_file
from jobs.shards.gallery import indexed_faces

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from jobs.shards.manifest import Manifest

TEMPLATES_ARROW = pa.schema([("subject_id", pa.string()), ("faces", pa.int32()), ("template", pa.list_(pa.float32()))])
TEMPLATES_DDL = "subject_id STRING, faces INT, template ARRAY<FLOAT>"


def mean_template(vectors: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The unit-length weighted mean of a subject's unit face embeddings (weights: each face's quality;
    None or a face without one: 1).

    >>> [round(float(v), 4) for v in mean_template(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([3.0, 1.0]))]
    [0.9487, 0.3162]
    """
    vectors = np.asarray(vectors, np.float64)
    w = np.ones(len(vectors)) if weights is None else np.nan_to_num(np.asarray(weights, np.float64), nan=1.0)
    total = (vectors * w[:, None]).sum(axis=0)
    return (total / max(float(np.linalg.norm(total)), 1e-12)).astype(np.float32)


def _group_template(table: pa.Table) -> pa.Table:
    """One subject's faces (subject_id, embedding, quality) -> its template row."""
    flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = flat.astype(np.float32).reshape(table.num_rows, -1)
    quality = table.column("quality").to_numpy(zero_copy_only=False).astype(np.float64)
    template = mean_template(vectors, quality)
    return pa.table(
        {
            "subject_id": [table.column("subject_id")[0].as_py()],
            "faces": pa.array([table.num_rows], pa.int32()),
            "template": pa.array([template.tolist()], pa.list_(pa.float32())),
        }
    )


def subject_templates(frame: DataFrame) -> pa.Table:
    """Templates of every subject among `frame`'s faces (columns subject_id, embedding and, when measured,
    quality); faces without a subject_id have none. Computed per subject on the executors."""
    from pyspark.sql import functions as F

    quality = F.col("quality").cast("double") if "quality" in frame.columns else F.lit(None).cast("double")
    faces = frame.where(F.col("subject_id").isNotNull()).select("subject_id", "embedding", quality.alias("quality"))
    grouped = faces.groupBy("subject_id").applyInArrow(_group_template, TEMPLATES_DDL)
    return grouped.orderBy("subject_id").toArrow().cast(TEMPLATES_ARROW)


def generation_templates(spark: SparkSession, manifest: Manifest) -> pa.Table:
    """The templates of the faces a generation indexes: its faces table at its pinned version, status ok,
    its model, above its quality floor."""
    return subject_templates(indexed_faces(spark, manifest))


def add_templates(spark: SparkSession, manifest: Manifest, directory: AnyPath, generation: int) -> None:
    """Compute the generation's templates, write their file and name it in the (unpublished) manifest."""
    for key, value in write_templates(directory, generation, generation_templates(spark, manifest)).items():
        setattr(manifest, key, value)


def write_templates(directory: AnyPath, generation: int, table: pa.Table) -> dict[str, Any]:
    """The templates file of a generation; the manifest fields that name it."""
    name = f"templates.g{generation}.arrow"
    sha256 = write_arrow_file(directory, name, table, TEMPLATES_ARROW)
    faces = int(pa.compute.sum(table.column("faces")).as_py() or 0) if table.num_rows else 0
    return {
        "templates_file": name,
        "templates_sha256": sha256,
        "templates": table.num_rows,
        "template_faces": faces,
    }


@dataclass(frozen=True)
class Templates:
    subjects: np.ndarray  # subject_id per row (object)
    faces: np.ndarray  # faces behind each template
    vectors: np.ndarray  # (n, dim) float32, unit length

    def search(self, probes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k templates per probe: (scores, rows), best first, ties by subject order."""
        k = min(k, len(self.subjects))
        sims = np.asarray(probes, np.float32) @ self.vectors.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, top, axis=1), top


def read_templates_bytes(data: bytes) -> Templates:
    table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    flat = table.column("template").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return Templates(
        subjects=np.asarray(table.column("subject_id").to_pylist(), dtype=object),
        faces=table.column("faces").to_numpy(zero_copy_only=False),
        vectors=flat.astype(np.float32).reshape(table.num_rows, -1),
    )


_LOADED: dict[tuple[str, str], Templates] = {}


def load_templates(directory: AnyPath | str, manifest: Manifest) -> Templates:
    """The generation's templates, checked against the manifest's sha256, once per Python worker."""
    if not manifest.templates_file or not manifest.templates_sha256:
        raise ValueError("this index generation has no templates")
    return load_once(_LOADED, directory, manifest.templates_file, manifest.templates_sha256, read_templates_bytes)
