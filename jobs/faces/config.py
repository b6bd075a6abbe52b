"""Configuration of the embed job (validated, no I/O)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from jobs.common.config import LineupConfig, StrictModel, location_field
from jobs.common.storage import AnyPath, is_remote


class InputSettings(StrictModel):
    kind: Literal["dir", "tar", "table"] = "dir"
    path: str = location_field(..., description="a folder, a tar file (or folder of tars), or a Delta/Parquet table")
    glob: str = Field("*", description="file-name pattern for folder files and tar members")
    table_format: Literal["delta", "parquet"] = "delta"
    bytes_column: str = "content"
    id_column: str = "path"
    max_file_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="larger files and members become too_large rows, never read"
    )
    follow_symlinks: bool = Field(False, description="read symlinks that point outside the input folder")


class LabelTableSettings(StrictModel):
    """A table of labels joined to images by name (path relative to the input folder, tar member or id)."""

    path: str = location_field()
    format: Literal["delta", "parquet", "csv"] = "delta"
    key_column: str = "path"
    subject_column: str | None = "subject_id"
    attribute_columns: list[str] = Field(default_factory=list)


class LabelSettings(StrictModel):
    table: LabelTableSettings | None = None
    subject_from_path: str | None = Field(None, description="regex on the relative path; group 1 = subject_id")
    attributes_from_name: str | None = Field(None, description="regex on the file name; named groups = attributes")

    @field_validator("subject_from_path", "attributes_from_name")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a valid regular expression: {error}") from None
        return value


class EmbedSettings(StrictModel):
    input: InputSettings
    table_path: str | None = location_field(None, description="faces table; default <data_root>/tables/faces")
    pack_dir: str | None = location_field(None, description="model pack; default the default pack")
    labels: LabelSettings = Field(default_factory=LabelSettings)
    files_per_task: int = Field(
        512, ge=1, description="largest task; tasks shrink toward a chunk's end (each costs ~50-85 ms of PySpark)"
    )
    files_per_commit: int = Field(4096, ge=1, description="each chunk is one Delta commit: progress survives a crash")
    driver_hash_max_files: int | None = Field(
        None,
        ge=0,
        description="a chunk this small is hashed on the driver (no Spark job) to find known images; "
        "default: a whole chunk of local files, 512 remote objects",
    )
    batch_images: int = Field(16, ge=1)
    max_pixels: int = Field(50_000_000, ge=1)
    retry_rotations: bool = Field(
        False, description="an image with no face upright is tried at 90, 180 and 270 degrees (sideways scans)"
    )
    quality: bool = Field(
        True,
        description="measure each face's quality components, unified `quality` and `quality_reasons` "
        "(cheap: docs/jobs/embed.md gives the measured cost); off leaves them null",
    )
    threads_per_worker: int = Field(1, ge=1)
    warmup: bool = Field(
        False,
        description="start the Python workers and build their face pipelines while the driver plans; off by "
        "default: on the reference VM it did not speed a fresh run up (docs/performance.md#embed)",
    )
    progress_interval_s: float = Field(30.0, gt=0)


class EmbedConfig(LineupConfig):
    embed: EmbedSettings

    def driver_hash_max_files(self) -> int:
        """How many files of a chunk the driver hashes itself. Local files: a whole chunk (4,096 LFW
        images in 0.5-0.9 s on a 2-vCPU VM, where a fresh JVM's first hashing job costs ~10 s and a
        warm one ~2 s). Remote objects: 512 (the driver's fetches do not scale out as executors' do).

        >>> EmbedConfig.model_validate({"embed": {"input": {"path": "s3://b/photos"}}}).driver_hash_max_files()
        512
        """
        if self.embed.driver_hash_max_files is not None:
            return self.embed.driver_hash_max_files
        return REMOTE_DRIVER_HASH_MAX_FILES if is_remote(self.embed.input.path) else self.embed.files_per_commit

    def faces_table_path(self) -> str:
        return self.locations.table(self.embed.table_path, "faces")

    def resolved_pack_dir(self) -> AnyPath:
        return self.locations.pack_dir(self.embed.pack_dir)


REMOTE_DRIVER_HASH_MAX_FILES = 512
