"""Spark columns for normalized scores: each face's normalization offset, computed on the executors
with the numpy code of `jobs.common.normalization` (one home for the arithmetic)."""

# No `from __future__ import annotations`: pandas_udf reads the function's type hints as real types.
from typing import TYPE_CHECKING

import numpy as np

from jobs.common.normalization import Normalization

if TYPE_CHECKING:
    from pyspark.sql import Column


def offset_column(embedding_column: str, normalization: Normalization) -> "Column":
    """A DOUBLE column: the face's offset (its cluster's), null where the embedding is null."""
    import pandas as pd
    from pyspark.sql import functions as F

    @F.pandas_udf("double")  # type: ignore[call-overload]
    def offsets(embeddings: pd.Series) -> pd.Series:
        present = embeddings.notna().to_numpy()
        out = np.full(len(embeddings), np.nan)
        if present.any():
            vectors = np.stack([np.asarray(v, np.float32) for v in embeddings[present]])
            out[present] = normalization.offsets_of(vectors)
        return pd.Series(out).where(present, None)

    return offsets(F.col(embedding_column))


def normalized_score(raw: "Column", offset_a: "Column", offset_b: "Column") -> "Column":
    """The pair's normalized score as a FLOAT column (the raw score column is kept beside it)."""
    return (raw.cast("double") - (offset_a + offset_b) / 2).cast("float")
