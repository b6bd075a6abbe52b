from pathlib import Path

import pytest

from jobs.common.config import ConfigError, LineupConfig, apply_overrides, load_config, parse_override

REPO_ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_shipped_config_loads() -> None:
    config = load_config(LineupConfig, REPO_ROOT / "conf" / "lineup.yaml")
    assert config.spark.master == "local[*]"
    assert config.spark.shuffle_partitions == 8


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "spark:\n  mastr: local[2]\n")
    with pytest.raises(ConfigError) as error:
        load_config(LineupConfig, path)
    assert "spark.mastr" in str(error.value) and str(path) in str(error.value)


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "spark:\n  shuffle_partitions: many\n")
    with pytest.raises(ConfigError) as error:
        load_config(LineupConfig, path)
    assert "spark.shuffle_partitions" in str(error.value) and str(path) in str(error.value)


def test_string_number_is_not_coerced(tmp_path: Path) -> None:
    path = write(tmp_path, "spark:\n  shuffle_partitions: '4'\n")
    with pytest.raises(ConfigError, match="shuffle_partitions"):
        load_config(LineupConfig, path)


def test_override_wins_and_is_typed(tmp_path: Path) -> None:
    path = write(tmp_path, "spark:\n  shuffle_partitions: 4\n")
    config = load_config(LineupConfig, path, ["spark.shuffle_partitions=16", "spark.ui_enabled=true"])
    assert config.spark.shuffle_partitions == 16
    assert config.spark.ui_enabled is True


def test_bad_override_is_blamed_on_set_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "spark:\n  shuffle_partitions: 4\n")
    with pytest.raises(ConfigError) as error:
        load_config(LineupConfig, path, ["spark.shuffle_partitions=zero"])
    assert "--set" in str(error.value) and "spark.shuffle_partitions" in str(error.value)


@pytest.mark.parametrize("override", ["spark.master", "=x", "spark..master=x"])
def test_malformed_override(override: str) -> None:
    with pytest.raises(ConfigError, match="KEY.SUB=VALUE"):
        parse_override(override)


def test_override_into_a_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="'log_level' is a value"):
        apply_overrides({"log_level": "INFO"}, ["log_level.x=1"])


def test_overrides_do_not_mutate_input() -> None:
    data = {"spark": {"master": "local[1]"}}
    merged, touched = apply_overrides(data, ["spark.master=local[4]"])
    assert data["spark"]["master"] == "local[1]"
    assert merged["spark"]["master"] == "local[4]" and touched == {"spark.master"}


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(LineupConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(LineupConfig, write(tmp_path, "- a\n- b\n"))


def test_defaults_resolve_under_lineup_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LINEUP_HOME", str(tmp_path))
    monkeypatch.delenv("LINEUP_DATA_ROOT", raising=False)  # the suite's own isolation
    config = load_config(LineupConfig)
    assert config.spark.resolved_jars_dir() == tmp_path / "jars"
    assert config.spark.resolved_data_root() == tmp_path / "data"


def test_override_value_that_is_not_yaml_stays_text() -> None:
    assert parse_override("embed.input.glob=*.jpg") == (["embed", "input", "glob"], "*.jpg")


def _settings_models(model: type, seen: set | None = None) -> list[type]:
    """The model and every settings model nested in it."""
    from typing import get_args

    from pydantic import BaseModel

    seen = set() if seen is None else seen
    if model in seen:
        return []
    seen.add(model)
    found = [model]
    for field in model.model_fields.values():
        candidates = [field.annotation, *get_args(field.annotation)]
        candidates += [inner for c in list(candidates) for inner in get_args(c)]
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found += _settings_models(candidate, seen)
    return found


def test_every_setting_that_names_a_place_is_a_declared_location() -> None:
    """A new table, folder or file setting must be declared with `location_field`, or the preflight would
    not check it (and a wrong bucket would fail deep inside the job instead of in one line)."""
    from jobs.audit.config import AuditConfig
    from jobs.common.config import LOCATION
    from jobs.compare.config import CompareConfig
    from jobs.demo.config import DemoConfig
    from jobs.embed.config import EmbedConfig
    from jobs.forget.config import ForgetConfig
    from jobs.index.config import IndexConfig
    from jobs.query.config import QueryConfig

    place = ("_table", "_tables", "_dir", "_dirs", "path", "_root", "from_file", "from_table")
    NOT_PLACES = {"LabelSettings.subject_from_path"}  # a regular expression over paths, not a place
    undeclared, declared = [], 0
    for config in (AuditConfig, CompareConfig, DemoConfig, EmbedConfig, ForgetConfig, IndexConfig, QueryConfig):
        for model in _settings_models(config):
            for name, field in model.model_fields.items():
                is_location = isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(LOCATION)
                declared += bool(is_location)
                if name.endswith(place) and not is_location and f"{model.__name__}.{name}" not in NOT_PLACES:
                    undeclared.append(f"{model.__name__}.{name}")
    assert not undeclared, f"declare these with location_field: {sorted(set(undeclared))}"
    assert declared >= 30


def test_location_settings_walk_lists_and_nested_sections() -> None:
    from jobs.common.config import location_settings
    from jobs.forget.config import ForgetConfig

    config = load_config(
        ForgetConfig, None, ["forget.faces_tables=[s3a://lake/a, /tmp/b]", "forget.selector.from_file=s3a://in/ids.txt"]
    )
    keys = dict(location_settings(config))
    found = [(k, v) for k, v in location_settings(config) if k.startswith("forget.")]
    assert ("forget.faces_tables", "s3a://lake/a") in found and ("forget.faces_tables", "/tmp/b") in found
    assert keys["forget.selector.from_file"] == "s3a://in/ids.txt" and "runs_table" not in keys  # default: None
