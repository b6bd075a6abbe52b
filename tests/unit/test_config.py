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
