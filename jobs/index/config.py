"""Configuration of the index job (validated, no I/O)."""

from __future__ import annotations

from pydantic import Field
from upath import UPath

from jobs.common.config import LineupConfig, StrictModel, location_field
from jobs.models.quality_model import QualityLevel
from jobs.shards.choose import DEFAULT_RECALL_FLOOR

# How long files of a superseded generation stay for readers that pinned it; only
# `lineup index --set index.vacuum=true` removes them, as Delta's VACUUM does.
DEFAULT_RETENTION_HOURS = 24.0


class IndexSettings(StrictModel):
    faces_table: str | None = location_field(None, description="default <data_root>/tables/faces")
    faces_version: int | None = Field(None, ge=0, description="Delta version to index; default the latest")
    index_dir: str | None = location_field(None, description="default <data_root>/indexes/faces")
    model_id: str | None = Field(None, description="which model's faces, when the table holds several")
    shards: int = Field(4, ge=1)
    memory_budget_gb: float = Field(
        8.0,
        gt=0,
        description="memory the whole index may take (10M x 128: 4.8 GiB of full vectors + 0.3 GiB of 4-bit "
        "codes); beyond it 8-bit codes alone, whose recall@10 stalled at 0.947 on 10M face-shaped vectors",
    )
    factory: str | None = Field(None, description="a FAISS factory string forcing the index type")
    recall_k: int = Field(10, ge=1)
    recall_floor: float = Field(
        DEFAULT_RECALL_FLOOR,
        gt=0,
        le=1,
        description="least recall@k against exact search the index must keep (measured on held-out faces; the "
        "build fails below it). 1.0 = exact search at any size; below 1 allows an approximate index",
    )
    accept_low_recall: bool = False
    holdout_queries: int = Field(1000, ge=1)
    train_sample: int = Field(65536, ge=100)
    seed: int = 0
    quality_filter: QualityLevel = Field(
        "NONE",
        description="leave gallery faces below this level's quality floor out of the index (they stay in the "
        "faces table; the manifest counts them): NONE, LOW, MEDIUM, HIGH, or AUTO (the level the EDC chose)",
    )
    templates: bool = Field(
        False,
        description="also build one identity template per subject (the quality-weighted mean of its faces), "
        "for query.search=subjects; rebuilt by every update",
    )
    update: bool = Field(False, description="add rows new since the manifest's version instead of rebuilding")
    rebuild_fraction: float = Field(0.2, gt=0, description="advise a rebuild once this share was added later")
    vacuum: bool = Field(
        False, description="only remove superseded generations older than retention_hours (and killed builds' files)"
    )
    retention_hours: float = Field(
        DEFAULT_RETENTION_HOURS, ge=0, description="with vacuum: how long superseded generations stay for readers"
    )


class IndexConfig(LineupConfig):
    index: IndexSettings = Field(default_factory=IndexSettings)

    def faces_table_path(self) -> str:
        return self.locations.table(self.index.faces_table, "faces")

    def index_path(self) -> UPath:
        return self.locations.index_dir(self.index.index_dir)
