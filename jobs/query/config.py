"""Configuration of the query job (validated, no I/O)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from upath import UPath

from jobs.common.config import LineupConfig, StrictModel, location_field
from jobs.common.thresholds import ThresholdSettings
from jobs.faces.config import InputSettings, LabelSettings
from jobs.models.quality_model import QualityLevel


class ProbeSettings(StrictModel):
    kind: Literal["faces_table", "archive"] = "faces_table"
    faces_table: str | None = location_field(None, description="kind=faces_table: a faces table to take probes from")
    faces_version: int | None = Field(None, ge=0, description="kind=faces_table: its Delta version; default latest")
    where: str | None = Field(None, description="kind=faces_table: a SQL filter, e.g. \"subject_id = 'x'\"")
    archive: InputSettings | None = Field(None, description="kind=archive: the images, as embed.input")
    probe_table: str | None = location_field(
        None, description="kind=archive: faces table for probes; default <data_root>/tables/probe_faces"
    )
    pack_dir: str | None = location_field(None, description="kind=archive: model pack; default the default pack")
    labels: LabelSettings = Field(default_factory=LabelSettings)

    @model_validator(mode="after")
    def _source_given(self) -> ProbeSettings:
        if self.kind == "faces_table" and not self.faces_table:
            raise ValueError("kind faces_table needs probes.faces_table (or set probes.kind=archive)")
        if self.kind == "archive" and self.archive is None:
            raise ValueError("kind archive needs probes.archive.path (and .kind dir|tar|table)")
        return self


class QuerySettings(StrictModel):
    probes: ProbeSettings
    index_dir: str | None = location_field(None, description="default <data_root>/indexes/faces")
    k: int = Field(10, ge=1, le=1000, description="candidates kept per probe")
    search: Literal["faces", "subjects", "both"] = Field(
        "faces",
        description="faces: every gallery face; subjects: the index's identity templates (index.templates=true), "
        "written to the identities table with search=subjects; both",
    )
    rerank: bool = Field(False, description="rescore candidates exactly from the gallery's stored embeddings")
    rerank_factor: int = Field(4, ge=1, description="with rerank: fetch k * rerank_factor candidates first")
    search_value: int | None = Field(None, ge=1, description="override the index's nprobe/efSearch")
    probe_partitions: int | None = Field(None, ge=1, description="probe partitions; default Spark's parallelism")
    plan: Literal["auto", "all_shards", "per_shard"] = Field(
        "auto", description="all_shards: each task searches every shard; per_shard: one (probes, shard) per task"
    )
    worker_index_gb: float = Field(2.0, gt=0, description="auto picks all_shards while the index fits this")
    threshold: ThresholdSettings = Field(default_factory=ThresholdSettings)
    quality_filter: QualityLevel = Field(
        "NONE",
        description="probes below this level's quality floor are not searched: their matches row says "
        "probe_status=low_quality with the reasons. NONE, LOW, MEDIUM, HIGH, or AUTO (the level the EDC chose)",
    )
    matches_table: str | None = location_field(None, description="default <data_root>/tables/matches")
    identities_table: str | None = location_field(None, description="default <data_root>/tables/identities")


class QueryConfig(LineupConfig):
    query: QuerySettings

    def matches_table_path(self) -> str:
        return self.locations.table(self.query.matches_table, "matches")

    def identities_table_path(self) -> str:
        return self.locations.table(self.query.identities_table, "identities")

    def index_path(self) -> UPath:
        return self.locations.index_dir(self.query.index_dir)

    def probe_table_path(self) -> str:
        return self.table_path(self.query.probes.probe_table, "probe_faces")
