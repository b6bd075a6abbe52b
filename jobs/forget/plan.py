"""Driver side of an erasure: which rows are the person's. The selector is read and checked, then matched
in the faces and probe tables; what comes back is the person's face ids, image ids and the sha256 of each
of their embeddings (enough to find every copy, exactly, without keeping the vectors themselves)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.common.delta import is_delta_table
from jobs.common.erasures import ERASED, id_digest
from jobs.common.errors import UserError
from jobs.common.locations import resolve
from jobs.forget.config import SelectorSettings

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession

_HEX64 = re.compile(r"[0-9a-f]{64}")
_COLUMN = {"subject_ids": "subject_id", "face_ids": "face_id", "image_ids": "image_id", "source_paths": "source_path"}


def embedding_digest(vector: Any) -> str:
    """sha256 of the float32 bytes of an embedding: equal digests mean exactly equal vectors.

    >>> embedding_digest([0.5, -1.0]) == embedding_digest(np.array([0.5, -1.0], np.float32))
    True
    """
    return hashlib.sha256(np.asarray(vector, dtype=np.float32).tobytes()).hexdigest()


def selector_condition(selector: SelectorSettings, values: list[str]) -> Column:
    """The selector as a Spark condition on a faces-table layout: applied when the erasure deletes (and
    verifies), so rows committed after planning are matched too, not only the ids found then."""
    from pyspark.sql import functions as F

    column = F.col(_COLUMN[selector.kind])
    if selector.kind in ("subject_ids", "source_paths"):
        # By digest: Delta records a DELETE's condition in its log, which an erasure cannot purge.
        condition = F.sha2(column, 256).isin(sorted(id_digest(v) for v in values))
    else:
        condition = column.isin([int(v) for v in values] if selector.kind == "face_ids" else values)
    if selector.model_id:
        condition = condition & (F.col("model_id") == selector.model_id)
    return condition


def selector_values(selector: SelectorSettings, spark: SparkSession | None = None) -> list[str]:
    """The selector's values, checked for their kind; `UserError` naming the key when they are malformed."""
    values = [str(v).strip() for v in selector.values]
    if selector.from_table:
        if spark is None:
            raise RuntimeError("forget.selector.from_table is read with a SparkSession: a bug, please report it")
        values += _table_values(spark, selector.from_table, selector.from_column)
    if selector.from_file:
        path = Path(selector.from_file).expanduser()
        if not path.is_file():
            raise UserError(f"forget.selector.from_file {path} does not exist: give a text file, one value per line")
        values += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not values:
        raise UserError("forget.selector has no values: set forget.selector.values or forget.selector.from_file")
    if selector.kind == "face_ids":
        bad = [v for v in values if not re.fullmatch(r"-?\d+", v)]
    elif selector.kind == "image_ids":
        bad = [v for v in values if not _HEX64.fullmatch(v)]
    else:
        bad = []
    if bad:
        raise UserError(
            f"forget.selector.values: {bad[:3]} are not {selector.kind} "
            f"({'integers' if selector.kind == 'face_ids' else 'sha256 hex digests'}); fix forget.selector"
        )
    return sorted(set(values))


def _table_values(spark: SparkSession, table: str, column: str) -> list[str]:
    from pyspark.errors import AnalysisException

    path = resolve(table)
    try:
        frame = spark.read.format("delta" if is_delta_table(spark, path) else "parquet").load(path)
    except AnalysisException as error:
        raise UserError(
            f"forget.selector.from_table {path} is not a readable table: {str(error).splitlines()[0]}"
        ) from None
    if column not in frame.columns:
        raise UserError(f"forget.selector.from_table {path} has no column {column!r} (it has {frame.columns})")
    return [str(row[0]).strip() for row in frame.select(column).where(f"`{column}` IS NOT NULL").collect()]


@dataclass
class ErasedSet:
    """The person's rows, as found: ids to delete by, digests to verify by."""

    face_ids: set[int] = field(default_factory=set)
    image_ids: set[str] = field(default_factory=set)
    subject_ids: set[str] = field(default_factory=set)
    embedding_digests: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.face_ids)

    def update(self, other: ErasedSet) -> None:
        self.face_ids |= other.face_ids
        self.image_ids |= other.image_ids
        self.subject_ids |= other.subject_ids
        self.embedding_digests |= other.embedding_digests

    def to_json(self) -> str:
        return json.dumps({k: sorted(v) for k, v in self.__dict__.items()})

    @classmethod
    def from_json(cls, text: str) -> ErasedSet:
        data = json.loads(text)
        return cls({int(i) for i in data["face_ids"]}, *(set(data[k]) for k in list(cls.__dataclass_fields__)[1:]))


def find_rows(spark: SparkSession, tables: list[str], selector: SelectorSettings, values: list[str]) -> ErasedSet:
    """The rows of `tables` (faces-table layout) the selector names; tables not written yet are skipped."""
    from pyspark.sql import functions as F

    found = ErasedSet()
    for table in tables:
        if not is_delta_table(spark, table):
            continue
        frame = spark.read.format("delta").load(table).where(selector_condition(selector, values))
        frame = frame.where(F.col("status") != F.lit(ERASED))
        for row in frame.select("face_id", "image_id", "subject_id", "embedding").collect():
            found.face_ids.add(int(row.face_id))
            if row.image_id is not None:
                found.image_ids.add(row.image_id)
            if row.subject_id is not None:
                found.subject_ids.add(row.subject_id)
            if row.embedding is not None:
                found.embedding_digests.add(embedding_digest(row.embedding))
    if selector.kind == "subject_ids":
        found.subject_ids |= set(values)
    return found
