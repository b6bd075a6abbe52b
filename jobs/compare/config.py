"""Configuration of the compare job (validated, no I/O)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from jobs.common.config import LineupConfig, StrictModel, location_field
from jobs.common.thresholds import ThresholdSettings
from jobs.models.quality_model import QualityLevel


class PairsSettings(StrictModel):
    path: str = location_field(..., description="a CSV/TSV file with a header row, or a Delta/Parquet table")
    format: Literal["csv", "tsv", "delta", "parquet"] = "csv"
    kind: Literal["images", "faces"] = Field("images", description="two image paths, or two face_ids, per row")
    columns: list[str] = Field(default_factory=lambda: ["a", "b"], min_length=2, max_length=2)
    images_root: str | None = location_field(
        None, description="relative image paths start here; default the pairs file's folder"
    )


class CompareSettings(StrictModel):
    pairs: PairsSettings
    faces_table: str | None = location_field(None, description="kind=faces: default <data_root>/tables/faces")
    faces_version: int | None = Field(None, ge=0)
    pack_dir: str | None = location_field(None, description="kind=images: model pack; default the default pack")
    threshold: ThresholdSettings = Field(default_factory=ThresholdSettings)
    quality_filter: QualityLevel = Field(
        "NONE",
        description="a side whose face is below this level's quality floor is not compared: the pair's status "
        "says which (a_low_quality, b_low_quality). NONE, LOW, MEDIUM, HIGH, or AUTO",
    )
    scores_table: str | None = location_field(None, description="default <data_root>/tables/pair_scores")
    images_per_task: int = Field(64, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    max_pixels: int = Field(50_000_000, ge=1)


class CompareConfig(LineupConfig):
    compare: CompareSettings

    def scores_table_path(self) -> str:
        return self.locations.table(self.compare.scores_table, "pair_scores")

    def faces_table_path(self) -> str:
        return self.locations.table(self.compare.faces_table, "faces")
