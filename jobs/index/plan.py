"""Driver side of the index job: the gallery at a pinned version (one model, one dimension, checked) and
the training sample, brought to the driver through Arrow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from jobs.common.delta import read_pinned
from jobs.common.errors import UserError
from jobs.faces.quality_filter import QualityFloor, below, require_quality

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class Gallery:
    """The faces an index holds: (face_id, embedding) of one model at one version, how many, and how
    many of that model's faces a quality floor kept out."""

    frame: DataFrame
    version: int
    model_id: str
    dim: int
    vectors: int  # rows the index will hold
    below_floor: int = 0


def read_gallery(
    spark: SparkSession,
    table_path: str,
    version: int | None,
    model_id: str | None,
    floor: QualityFloor | None = None,
) -> Gallery:
    """`ok` rows (face_id, embedding) of one model at one version, those below `floor` left out (and
    counted); validates model and dimension."""
    from pyspark.sql import functions as F

    frame, version = read_pinned(spark, table_path, version, "index.faces_table", "run `lineup embed`", "faces table")
    frame = frame.where(F.col("status") == "ok")
    keys = [F.col("model_id"), F.size("embedding").alias("d")]
    if floor is not None:
        require_quality(frame, table_path, "index.quality_filter")
        keys.append(below(floor).alias("below"))
    # One pass over the table for models, dimensions, the floor's count and the vectors: each pass reads
    # every embedding (1M faces: ~8 s a pass on the reference VM).
    groups = frame.groupBy(*keys).count().collect()
    models = sorted({row.model_id for row in groups})
    if not models:
        raise UserError(f"index.faces_table {table_path} version {version} has no faces (status ok): nothing to index")
    if model_id is None and len(models) > 1:
        raise UserError(f"index.faces_table {table_path} mixes models {models}: set index.model_id to one")
    model_id = model_id or models[0]
    if model_id not in models:
        raise UserError(f"index.model_id {model_id} has no faces in {table_path} (it has {models})")
    frame = frame.where(F.col("model_id") == model_id)
    chosen = [row for row in groups if row.model_id == model_id]
    below_floor = 0
    if floor is not None:
        # a face of unknown quality (null `below`) is neither kept nor counted below, as the filter does
        below_floor = sum(int(row["count"]) for row in chosen if row.below is True)
        chosen = [row for row in chosen if row.below is False]
        frame = frame.where(~below(floor))
        if below_floor and not chosen:
            raise UserError(
                f"index.quality_filter {floor.level}: every face of {table_path} v{version} is below the floor "
                f"{floor.floor:g}: nothing to index; choose a lower level"
            )
    frame = frame.select("face_id", "embedding")
    dims = sorted({row.d for row in chosen})
    if len(dims) != 1:
        raise UserError(f"index.faces_table {table_path} has embeddings of several sizes {dims}: re-embed")
    vectors = sum(int(row["count"]) for row in chosen)
    return Gallery(frame, version, model_id, int(dims[0]), vectors, below_floor)


def to_numpy(frame: DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(face_ids, vectors) through Arrow, without a Python object per value (a bounded sample only)."""
    table = frame.toArrow()
    ids = table.column("face_id").to_numpy()
    flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids.astype(np.int64), flat.astype(np.float32).reshape(len(ids), -1)


def training_sample(frame: DataFrame, vectors: int, sample_size: int, seed: int) -> np.ndarray:
    """Up to `sample_size` gallery vectors, seeded: what the index is trained on."""
    # Bernoulli sampling draws about fraction x vectors rows: 5% more, then the limit, so the sample is
    # not short of what FAISS asks for (39 per list; it warned at 79,609 of 79,872 on 300k vectors).
    fraction = min(1.0, (sample_size * 1.05 + 100) / vectors)
    # Sampled before sorting: only the sample is sorted (ordering 10M rows of vectors first costs minutes).
    _, sample = to_numpy(frame.sample(fraction=fraction, seed=seed).orderBy("face_id").limit(sample_size))
    return sample
