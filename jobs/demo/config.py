"""Configuration of `lineup demo` (validated, no I/O)."""

from __future__ import annotations

from pydantic import Field

from jobs.common.config import LineupConfig, StrictModel, location_field


class DemoSettings(StrictModel):
    data: str | None = Field(None, description="folder holding lfw/ (default: $LINEUP_DATA_DIR or ../shared/data)")
    people: int | None = Field(None, ge=12, description="a seeded subset of LFW identities, for a quick run")
    target_fmr: float = Field(1e-5, gt=0, lt=1, description="the calibrated threshold's false match rate")
    fixed_threshold: float = Field(0.8, ge=-1, le=1, description="the uncalibrated threshold replayed beside it")
    k: int = Field(10, ge=1, le=100)
    race_target_fmr: float = Field(
        1e-4,
        gt=0,
        lt=1,
        description="the per-race half's calibrated FMR: its gallery half of utkface-dev (~500k impostor pairs) "
        "resolves 1e-4 overall and per FSN cluster, not 1e-5",
    )
    race_images: int | None = Field(
        None, ge=20, description="utkface-dev images for the per-race half (seeded subset); default all 2,000"
    )
    work_dir: str | None = location_field(
        None, description="tables, index and staged archives; default <data_root>/demo"
    )


class DemoConfig(LineupConfig):
    demo: DemoSettings = Field(default_factory=DemoSettings)
