"""Configuration of the audit job (validated, no I/O)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from jobs.common.config import LineupConfig, StrictModel, location_field
from jobs.common.storage import AnyPath
from jobs.common.thresholds import ThresholdSettings


class LabelledSettings(StrictModel):
    """The labelled faces for 1:1 error rates."""

    faces_table: str | None = location_field(None, description="a faces table with subject_id and/or attributes")
    faces_version: int | None = Field(None, ge=0)
    model_id: str | None = Field(None, description="which model's faces, when the table holds several")
    where: str | None = Field(None, description="a SQL filter on the faces table")
    name: str | None = Field(None, description="what the data is, for records and the report; default the path")
    face_per_image: Literal["all", "most_confident", "central"] = Field(
        "most_confident", description="which faces of a multi-face image are the labelled person"
    )
    genuine_max: int = Field(1_000_000, ge=1, description="genuine pairs beyond this are a seeded sample")
    impostor_max: int = Field(2_000_000, ge=1, description="impostor pairs beyond this are a seeded sample")
    impostors_within: list[str] = Field(
        default_factory=list, description="attributes impostor pairs must share, e.g. [race, gender]"
    )
    seed: int = 0


class IdentificationSettings(StrictModel):
    """A query run's matches for 1:N error rates."""

    matches_table: str | None = location_field(None)
    run_id: str | None = Field(None, description="default: the latest run in the matches table")
    index_dir: str | None = location_field(None, description="the run's index; default: found in the runs table")


class AuditSettings(StrictModel):
    labelled: LabelledSettings = Field(default_factory=LabelledSettings)
    identification: IdentificationSettings = Field(default_factory=IdentificationSettings)
    group_by: list[str] = Field(
        default_factory=list,
        description="attributes for demographic differentials; an intersection as a+b or as a list: [[race, gender]]",
    )
    fmr_targets: list[float] = Field(default_factory=lambda: [1e-2, 1e-3, 1e-4, 1e-5])
    fpir_targets: list[float] = Field(default_factory=lambda: [1e-1, 1e-2, 1e-3])
    differential_fmr: float = Field(1e-4, gt=0, lt=1, description="the global threshold groups are compared at")
    threshold: ThresholdSettings = Field(
        default_factory=ThresholdSettings, description="override the global threshold (explicit or calibrated)"
    )
    normalization: str | None = Field(
        None,
        description="a calibration with a normalization (`calibrate --normalization fsn`): report raw and normalized"
        " side by side; default: the one in threshold.calibration, if it normalizes",
    )
    scenario_thresholds: list[float] = Field(default_factory=lambda: [0.8, 0.9, 0.95])
    scenario_calibrations: list[str] = Field(default_factory=list, description="calibration ids/paths to replay")
    bootstrap_rounds: int = Field(1000, ge=0)
    report_dir: str | None = location_field(None, description="default <data_root>/reports")
    metrics_table: str | None = location_field(None)
    calibrations_table: str | None = location_field(None)

    @field_validator("group_by", mode="before")
    @classmethod
    def _intersections(cls, value: object) -> object:
        """[[race, gender]] (NIST's sex x race cells) is the intersection race+gender."""
        if isinstance(value, list):
            return ["+".join(map(str, item)) if isinstance(item, list | tuple) else item for item in value]
        return value

    @model_validator(mode="after")
    def _something_to_audit(self) -> AuditSettings:
        if not self.labelled.faces_table and not self.identification.matches_table:
            raise ValueError("give labelled.faces_table (1:1) and/or identification.matches_table (1:N)")
        return self


class AuditConfig(LineupConfig):
    audit: AuditSettings

    def metrics_table_path(self) -> str:
        return self.locations.table(self.audit.metrics_table, "audit_metrics")

    def calibrations_table_path(self) -> str:
        return self.locations.table(self.audit.calibrations_table, "calibrations")

    def report_path(self) -> AnyPath:
        return self.locations.report_dir(self.audit.report_dir)
