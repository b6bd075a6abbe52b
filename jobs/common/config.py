"""Configuration: `conf/*.yaml` files validated by pydantic models, with `--set a.b=c` overrides.

Every job's configuration is a `LineupConfig` subclass, so the `spark` and `log_level` sections mean the
same thing everywhere. Validation is strict: an unknown key or a wrong type is a `ConfigError` naming the
key and the file (or the `--set` flag) it came from. Loading does no other I/O.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticUndefined
from upath import UPath

from jobs.common.errors import UserError
from jobs.common.locations import Locations, resolve
from jobs.common.paths import jars_dir


class ConfigError(UserError):
    """A configuration problem a user must fix; the message names the key, the source and the fix."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys and type coercions are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


LOCATION = "location"


def location_field(default: Any = PydanticUndefined, **kwargs: Any) -> Any:
    """A setting that names a place Lineup reads or writes (a table, folder, file or URI). Every config
    declares its locations this way, and only these are checked before a job starts: an S3 endpoint in
    `spark.extra_conf` or a selector's source paths look like URIs but are no such place."""
    return Field(default, json_schema_extra={LOCATION: True}, **kwargs)


def location_settings(settings: BaseModel, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, value) of every location a config holds, at any depth, lists included.

    >>> location_settings(LineupConfig.model_validate({"runs_table": "s3a://lake/runs"}))
    [('runs_table', 's3a://lake/runs')]
    """
    found: list[tuple[str, str]] = []
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get(LOCATION):
            values = value if isinstance(value, list) else [value]
            found += [(f"{prefix}{name}", v) for v in values if isinstance(v, str)]
        elif isinstance(value, BaseModel):
            found += location_settings(value, f"{prefix}{name}.")
        elif isinstance(value, list):
            found += [
                item for v in value if isinstance(v, BaseModel) for item in location_settings(v, f"{prefix}{name}.")
            ]
    return found


class SparkSettings(StrictModel):
    """How jobs get their SparkSession. Ignored where `spark-submit` already decided (master, confs)."""

    master: str = "local[*]"
    app_name: str = "lineup"
    data_root: str | None = location_field(None, description="warehouse and default tables; default $LINEUP_HOME/data")
    jars_dir: str | None = location_field(None, description="staged Delta jars; default $LINEUP_HOME/jars")
    shuffle_partitions: int = Field(8, ge=1)
    ui_enabled: bool = False
    driver_memory: str = "4g"
    driver_java_options: str = Field(
        "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m",
        description="local runs: the driver JVM's options; quick JIT only halves the JVM's CPU time in a "
        "short job, which otherwise competes with the Python workers for the cores. With it the JVM "
        "reserves only 48 MB for compiled code: a long session filled that, the JIT switched itself off "
        "and a 4,096-row MERGE took 9.4 s instead of ~2 s, hence the larger cache",
    )
    metastore_dir: str | None = location_field(
        None, description="local runs: a Derby Hive metastore here, so catalog tables outlive the session"
    )
    extra_conf: dict[str, str] = Field(default_factory=dict, description="any other spark.* settings")

    def resolved_data_root(self) -> UPath:
        return Locations(self.data_root).data_root()

    def resolved_jars_dir(self) -> Path:
        return Path(resolve(self.jars_dir)) if self.jars_dir else jars_dir()


class StorageSettings(StrictModel):
    """Object-store settings that are not secrets (credentials come from the environment, an instance
    role or the Hadoop configuration, never from a config file)."""

    s3_endpoint: str | None = Field(None, description="S3-compatible endpoint URL; default AWS_ENDPOINT_URL, else AWS")
    s3_region: str | None = Field(None, description="default AWS_REGION / AWS_DEFAULT_REGION")
    s3_path_style: bool = Field(False, description="bucket in the path, not the host name (most non-AWS servers)")


class LineupConfig(StrictModel):
    """Settings shared by every job."""

    spark: SparkSettings = Field(default_factory=SparkSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    runs_table: str | None = location_field(
        None, description="the runs table every job appends to; default <data_root>/tables/runs"
    )
    erasures_table: str | None = location_field(
        None,
        description="the erasure register every embedding job consults and forget appends to; "
        "default <data_root>/tables/erasures",
    )
    catalog_database: str | None = Field(None, description="register every output table as <database>.<folder name>")

    @property
    def locations(self) -> Locations:
        return Locations(self.spark.data_root, self.runs_table, self.erasures_table)

    def table_path(self, given: str | None, default_name: str) -> str:
        """A configured table location, resolved; else `<data_root>/tables/<default_name>`."""
        return self.locations.table(given, default_name)

    def runs_table_path(self) -> str:
        return self.locations.runs_table()

    def erasures_table_path(self) -> str:
        return self.locations.erasures_table()


ConfigT = TypeVar("ConfigT", bound=LineupConfig)

# Settings every job shares, read from beside the job's own file (which may override them).
SHARED_CONF = "lineup.yaml"
# What an error echoes of a bad value is bounded: a 400-byte YAML alias bomb expands to gigabytes.
_ECHO = reprlib.Repr()
_ECHO.maxlevel, _ECHO.maxdict, _ECHO.maxlist, _ECHO.maxstring, _ECHO.maxother = 2, 4, 4, 80, 80


def parse_override(override: str) -> tuple[list[str], Any]:
    """Split `a.b=c` into (["a", "b"], value); the value is read as YAML so `3`, `true`, `[1, 2]` get types,
    and kept as text where it is not YAML (`*.jpg`).

    >>> parse_override("spark.shuffle_partitions=4")
    (['spark', 'shuffle_partitions'], 4)
    """
    key, sep, raw_value = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {override!r}: expected KEY.SUB=VALUE, for example --set spark.master=local[2]")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value  # e.g. `*.jpg`, which YAML reads as an alias: the user meant the text
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> tuple[dict[str, Any], set[str]]:
    """Return a copy of `data` with overrides applied, and the dotted keys they set."""
    result: dict[str, Any] = _deep_copy(data)
    touched: set[str] = set()
    for override in overrides:
        parts, value = parse_override(override)
        _set_dotted(result, parts, value, f"--set {override!r}")
        touched.add(".".join(parts))
    return result, touched


def _set_dotted(data: dict[str, Any], parts: Sequence[str], value: Any, label: str) -> None:
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:  # a section the file leaves null (`archive: null`) is filled by --set
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"{label}: {prefix!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def config_from(
    model: type[ConfigT], given: ConfigT | Mapping[str, Any] | str | PathLike[str] | None, overrides: Mapping[str, Any]
) -> ConfigT:
    """A job's config from what a Python caller has: a config object, a dict of the YAML's sections, a YAML
    file (read as `--conf` reads it) or nothing (the defaults); `overrides` are `--set`'s dotted keys with
    Python values.

    >>> config_from(LineupConfig, {"log_level": "DEBUG"}, {"spark.master": "local[2]"}).spark.master
    'local[2]'
    >>> config_from(LineupConfig, None, {"spark.nope": 1})
    Traceback (most recent call last):
    jobs.common.config.ConfigError: overrides: unknown key 'spark.nope'; check its spelling against conf/*.yaml
    """
    if isinstance(given, model) and not overrides:
        return given
    if given is None or isinstance(given, str | PathLike):
        base, source = read_sources(given)
    elif isinstance(given, BaseModel):
        base, source = given.model_dump(mode="json"), type(given).__name__
    else:
        base, source = _deep_copy(dict(given)), "the settings given"
    for key, value in overrides.items():
        _set_dotted(base, key.split("."), value, f"override {key!r}")
    try:
        return model.model_validate(base)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, set(overrides), "overrides")) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one config file; a missing file or a non-mapping top level is a `ConfigError`."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing file, e.g. --conf conf/lineup.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(model: type[ConfigT], path: Path | str | None = None, overrides: Sequence[str] = ()) -> ConfigT:
    """Load and validate a config file (or defaults when `path` is None) with `--set` overrides applied.
    A `lineup.yaml` beside the file supplies the shared sections (spark, log_level, runs_table) first.

    >>> cfg = load_config(LineupConfig, None, ["spark.master=local[2]"])
    >>> cfg.spark.master
    'local[2]'
    """
    data, source = read_sources(path)
    merged, touched = apply_overrides(data, overrides)
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, touched)) from None


def read_sources(path: Path | str | PathLike[str] | None) -> tuple[dict[str, Any], str]:
    """A config file's settings over the `lineup.yaml` beside it (unvalidated), and what to call them."""
    if path is None:
        return {}, "<defaults>"
    data = read_yaml(Path(path))
    shared = Path(path).with_name(SHARED_CONF)
    if shared.is_file() and shared.resolve() != Path(path).resolve():
        return deep_merge(read_yaml(shared), data), f"{path} (over {shared})"
    return data, str(path)


def _describe(exc: ValidationError, source: str, touched: set[str], overrides: str = "--set") -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        origin = overrides if key in touched else source
        if error["type"] == "extra_forbidden":
            problems.append(f"{origin}: unknown key {key!r}; check its spelling against conf/*.yaml")
        else:
            problems.append(f"{origin}: key {key!r}: {error['msg']} (got {_ECHO.repr(error.get('input'))})")
    return "; ".join(problems)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, section by section (a value in `over` replaces, a section merges).

    >>> deep_merge({"spark": {"master": "local[*]", "ui_enabled": False}}, {"spark": {"master": "local[2]"}})
    {'spark': {'master': 'local[2]', 'ui_enabled': False}}
    """
    result = _deep_copy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = _deep_copy(value) if isinstance(value, dict) else value
    return result


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}
