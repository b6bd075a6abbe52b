"""Quality filters on faces tables (Spark side): which faces a level's floor keeps, the reason a face
below it gets, and the check that a table's faces were measured at all.

A filter never drops a face silently: the index states how many faces of the table stayed out of it and
at which floor; a query writes a probe below the floor as a matches row with `probe_status = low_quality`
and its reasons; compare says which side was too poor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs.common.errors import UserError
from jobs.models.quality import LOW_FACE_QUALITY
from jobs.models.quality_fit import DISPARITY, MEASURED_ON
from jobs.models.quality_model import QualityLevel, floor_of, resolved_level

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

LOW_QUALITY = "low_quality"


@dataclass(frozen=True)
class QualityFloor:
    """A filter level in force: its name (AUTO resolved), its floor on the unified quality, and what the
    benchmark measured about whom it discards."""

    level: str
    floor: float

    @property
    def disparity(self) -> str | None:
        return disparity_of(self.level)

    def describe(self) -> str:
        note = f"quality filter {self.level}: faces with quality below {self.floor:g} ({MEASURED_ON})"
        return f"{note}; {self.disparity}" if self.disparity else note

    def as_dict(self) -> dict[str, object]:
        return {"quality_filter": self.level, "quality_floor": self.floor, "quality_floor_disparity": self.disparity}


def disparity_of(level: str | None) -> str | None:
    """What the benchmark found about whom a level's floor discards, where it discards one demographic
    group over twice as often as another (None otherwise)."""
    return DISPARITY.get(level or "") or None


def quality_floor(level: QualityLevel) -> QualityFloor | None:
    """The floor of a configured level; None for NONE (no filter).

    >>> quality_floor("NONE") is None, quality_floor("LOW").level
    (True, 'LOW')
    """
    floor = floor_of(level)
    return None if floor is None else QualityFloor(resolved_level(level), floor)


def require_quality(frame: DataFrame, table: str, key: str) -> None:
    """Refuse to filter faces whose quality was never measured (a table written before Lineup measured
    it, or embedded with embed.quality=false): a floor on them would mean nothing."""
    from pyspark.sql import functions as F

    if "quality_reasons" not in frame.columns:
        unmeasured = -1
    else:
        unmeasured = frame.where((F.col("status") == "ok") & F.col("quality_reasons").isNull()).limit(1).count()
    if unmeasured:
        raise UserError(
            f"{key}: the faces in {table} have no measured quality (embedded before Lineup measured it, or with "
            f"embed.quality=false): embed them again into a new faces table, or set {key}=NONE"
        )


def below(floor: QualityFloor) -> Column:
    from pyspark.sql import functions as F

    return F.col("quality") < F.lit(floor.floor)


def low_quality_reasons(floor: QualityFloor) -> Column:
    """A filtered face's reasons: the components beyond their limits, then LOW_FACE_QUALITY."""
    from pyspark.sql import functions as F

    return F.concat(
        F.coalesce(F.col("quality_reasons"), F.array().cast("array<string>")), F.array(F.lit(LOW_FACE_QUALITY))
    )


def low_quality_error(floor: QualityFloor) -> Column:
    """`quality 0.12 below the MEDIUM floor 0.35: LOW_SHARPNESS, LOW_FACE_QUALITY`"""
    from pyspark.sql import functions as F

    return F.concat(
        F.lit("quality "),
        F.format_number(F.col("quality"), 3),
        F.lit(f" below the {floor.level} floor {floor.floor:g}: "),
        F.array_join(low_quality_reasons(floor), ", "),
    )


def mark_low_quality(frame: DataFrame, floor: QualityFloor | None) -> DataFrame:
    """Faces (status ok) below the floor become `low_quality` rows with their reasons in `error` and
    `quality_reasons`; every other row is unchanged."""
    from pyspark.sql import functions as F

    if floor is None:
        return frame
    low = (F.col("status") == "ok") & below(floor)
    replaced = {
        "status": F.when(low, F.lit(LOW_QUALITY)).otherwise(F.col("status")),
        "error": F.when(low, low_quality_error(floor)).otherwise(F.col("error")),
        "quality_reasons": F.when(low, low_quality_reasons(floor)).otherwise(F.col("quality_reasons")),
    }
    return frame.select(*[replaced.get(name, F.col(name)).alias(name) for name in frame.columns])
