"""Every shipped `conf/*.yaml` loads into its settings class, and names every settings field (so a new
setting cannot ship undocumented): a field missing from the file fails here."""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from jobs.audit.config import AuditConfig
from jobs.common.config import SHARED_CONF, LineupConfig, deep_merge, load_config, read_yaml
from jobs.compare.config import CompareConfig
from jobs.embed.config import EmbedConfig
from jobs.forget.config import ForgetConfig
from jobs.index.config import IndexConfig
from jobs.query.config import QueryConfig

CONF = Path(__file__).resolve().parents[2] / "conf"
CLASSES = {
    "lineup": LineupConfig,
    "embed": EmbedConfig,
    "index": IndexConfig,
    "query": QueryConfig,
    "compare": CompareConfig,
    "audit": AuditConfig,
    "forget": ForgetConfig,
}


def section_model(annotation: object) -> type[BaseModel] | None:
    """The settings class a field holds (also through `X | None`), or None for plain values."""
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def missing_fields(model: type[BaseModel], data: dict, prefix: str = "") -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if name not in data:
            missing.append(key)
            continue
        nested = section_model(field.annotation)
        if nested is not None and isinstance(data[name], dict):
            missing += missing_fields(nested, data[name], f"{key}.")
    return missing


def test_every_conf_file_has_a_settings_class() -> None:
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_shipped_conf_loads_and_names_every_field(name: str) -> None:
    path = CONF / f"{name}.yaml"
    # the one key each job needs from the user (the shipped files leave it null on purpose)
    overrides = {
        "audit": ["audit.labelled.faces_table=/t"],
        "query": ["query.probes.faces_table=/t"],
        "forget": ["forget.selector.values=[someone]"],
    }.get(name, [])
    load_config(CLASSES[name], path, overrides)  # validates: unknown keys and wrong types fail
    data = read_yaml(path) if name == "lineup" else deep_merge(read_yaml(CONF / SHARED_CONF), read_yaml(path))
    assert missing_fields(CLASSES[name], data) == []


def test_missing_field_is_detected() -> None:
    data = read_yaml(CONF / "lineup.yaml")
    del data["spark"]["driver_memory"]
    assert missing_fields(LineupConfig, data) == ["spark.driver_memory"]
