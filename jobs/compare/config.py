"""Configuration of the compare job (validated, no I/O)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from jobs.common.config import LineupConfig, StrictModel
from jobs.common.thresholds import ThresholdSettings


class PairsSettings(StrictModel):
    path: str = Field(..., description="a CSV/TSV file with a header row, or a Delta/Parquet table")
    format: Literal["csv", "tsv", "delta", "parquet"] = "csv"
    kind: Literal["images", "faces"] = Field("images", description="two image paths, or two face_ids, per row")
    columns: list[str] = Field(default_factory=lambda: ["a", "b"], min_length=2, max_length=2)
    images_root: str | None = Field(
        None, description="relative image paths start here; default the pairs file's folder"
    )


class CompareSettings(StrictModel):
    pairs: PairsSettings
    faces_table: str | None = Field(None, description="kind=faces: default <data_root>/tables/faces")
    faces_version: int | None = Field(None, ge=0)
    pack_dir: str | None = Field(None, description="kind=images: model pack; default the default pack")
    threshold: ThresholdSettings = Field(default_factory=ThresholdSettings)
    scores_table: str | None = Field(None, description="default <data_root>/tables/pair_scores")
    runs_table: str | None = Field(None, description="default <data_root>/tables/runs")
    images_per_task: int = Field(64, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    max_pixels: int = Field(50_000_000, ge=1)


class CompareConfig(LineupConfig):
    compare: CompareSettings

    def table(self, name: str) -> str:
        return self.table_path(getattr(self.compare, f"{name}_table", None), {"scores": "pair_scores"}.get(name, name))
