"""Configuration of the forget job (validated, no I/O)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from jobs.common.config import LineupConfig, StrictModel, location_field
from jobs.common.locations import resolve

SELECTOR_KINDS = ("subject_ids", "face_ids", "image_ids", "source_paths")


class SelectorSettings(StrictModel):
    """Whose data: give values inline (`values`) or in a file (`from_file`, one value per line)."""

    kind: Literal["subject_ids", "face_ids", "image_ids", "source_paths"] = "subject_ids"
    values: list[str] = Field(default_factory=list, description="the subject ids, face ids, image sha256s or paths")
    from_file: str | None = location_field(None, description="a text file with one value per line")
    from_table: str | None = location_field(None, description="a Delta or Parquet table holding the values")
    from_column: str = Field("value", description="with from_table: the column holding the values")
    model_id: str | None = Field(None, description="erase only this model's faces; default every model")

    @field_validator("values")
    @classmethod
    def _no_blank_values(cls, values: list[str]) -> list[str]:
        if any(not str(v).strip() for v in values):
            raise ValueError("blank selector value")
        return values


class ForgetSettings(StrictModel):
    selector: SelectorSettings | None = None
    older_than: str | None = Field(
        None, description="retention: also erase probe faces, matches and identities older than this (e.g. 365d)"
    )
    faces_tables: list[str] = location_field(
        default_factory=list, description="gallery faces tables; [] = the default one"
    )
    probe_tables: list[str] = location_field(default_factory=list, description="probe faces tables (query archives)")
    matches_tables: list[str] = location_field(default_factory=list)
    identities_tables: list[str] = location_field(default_factory=list)
    pair_scores_tables: list[str] = location_field(default_factory=list)
    index_dirs: list[str] = location_field(default_factory=list, description="indexes built on the faces tables")
    purge_history: bool = Field(False, description="vacuum the tables so old versions no longer hold the data")
    retention_hours: float | None = Field(
        None, ge=0, description="with purge_history: data files older than this are deleted; 0 = all old files"
    )
    verify: bool = Field(True, description="after erasing, scan every data file and shard for the erased data")
    lift: list[str] = Field(
        default_factory=list,
        description="erasure ids to lift (new consent), recorded: their content may be embedded again",
    )
    lift_reason: str | None = Field(None, description="with lift: why (e.g. the consent's reference), recorded")

    @field_validator("older_than")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+[dh]", value.strip()):
            raise ValueError("a duration like 365d or 48h")
        return value

    @model_validator(mode="after")
    def _something_to_erase(self) -> ForgetSettings:
        if self.lift:
            if self.selector is not None or self.older_than is not None:
                raise ValueError("forget.lift is an act of its own: give it without selector or older_than")
            if not (self.lift_reason or "").strip():
                raise ValueError("forget.lift needs forget.lift_reason (why the erasure is lifted: it is recorded)")
            return self
        if self.selector is None and self.older_than is None:
            raise ValueError("give forget.selector (whose data) and/or forget.older_than (retention)")
        if self.purge_history and self.retention_hours is None:
            raise ValueError(
                "purge_history needs an explicit retention_hours (0 purges every old version: concurrent "
                "readers of old versions fail and time travel before the erasure ends)"
            )
        return self


class ForgetConfig(LineupConfig):
    forget: ForgetSettings

    def faces_table_paths(self) -> list[str]:
        given: list[str | None] = list(self.forget.faces_tables) or [None]
        return [self.locations.table(table, "faces") for table in given]

    def resolved(self, locations: list[str]) -> list[str]:
        return [resolve(location) for location in locations]

    def older_than_hours(self) -> float | None:
        if self.forget.older_than is None:
            return None
        value = self.forget.older_than.strip()
        return float(value[:-1]) * (24 if value.endswith("d") else 1)
