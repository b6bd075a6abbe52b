"""Hand-edited or hostile metadata files are refused with one line naming the file, never a raw KeyError,
and a hostile config cannot blow up the error message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.common.calibrations import load_calibration
from jobs.common.config import ConfigError, LineupConfig, load_config
from jobs.common.errors import UserError
from jobs.models.decode import decode_image
from jobs.models.pack import PackError, derive_model_id, load_pack, write_pack
from jobs.shards.manifest import IndexFileError, read_manifest
from tests.unit.test_pack import FILES, MANIFEST


def test_yaml_alias_bomb_gives_a_short_error(tmp_path: Path) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        previous = chr(ord("a") + level - 1)
        name = chr(ord("a") + level)
        levels.append(f"{name}: &{name} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("anchors:\n" + "\n".join("  " + line for line in levels) + "\nspark: *i\n")
    assert bomb.stat().st_size < 600
    with pytest.raises(ConfigError) as error:
        load_config(LineupConfig, bomb)
    assert len(str(error.value)) < 2000 and "anchors" in str(error.value)


@pytest.mark.parametrize(
    "manifest",
    [{"x": 1}, {"index_id": "i", "shards": "not a list"}, []],
    ids=["unknown keys", "wrong types", "not an object"],
)
def test_malformed_index_manifest_is_refused(tmp_path: Path, manifest: object) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFileError) as error:
        read_manifest(tmp_path)
    assert "manifest.json" in str(error.value) and "\n" not in str(error.value)


def test_manifest_naming_a_shard_outside_its_folder_is_refused(tmp_path: Path) -> None:
    manifest = {
        "index_id": "i", "model_id": "m", "dim": 4, "metric": "inner_product", "faces_table": "/t",
        "faces_version": 0, "vectors": 1, "exact": True, "search_param": None,
        "shards": [{"shard": 0, "file": "../../etc/passwd", "sha256": "0" * 64, "vectors": 1}],
    }  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFileError, match="outside the index folder"):
        read_manifest(tmp_path)
    manifest["shards"][0]["file"] = "shard-0000.faiss"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(tmp_path).index_id == "i"


def calibration(tmp_path: Path, name: str, **changes: object) -> Path:
    record = {"calibration_id": name, "threshold": 0.6, "model_id": "m", "target_fmr": 1e-3, "measured_fmr": 1e-3}
    record["data"] = {"name": "utkface-dev", "table": "/t/faces", "version": 3}
    record.update(changes)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"threshold": 7.5}, "outside \\[-1, 1\\]"),
        ({"threshold": "0.5"}, "outside \\[-1, 1\\]"),
        ({"calibration_id": "someone-else"}, "not its file name"),
        ({"model_id": ""}, "model_id is empty"),
        ({"data": None}, "data"),  # a threshold that does not say what it was measured on
    ],
)
def test_invalid_calibration_records_are_refused(tmp_path: Path, changes: dict, problem: str) -> None:
    path = calibration(tmp_path, "cal-1", **changes)
    with pytest.raises(UserError, match=problem):
        load_calibration(str(path), tmp_path, "query.threshold.calibration")


def test_valid_calibration_record_loads(tmp_path: Path) -> None:
    path = calibration(tmp_path, "cal-1")
    record = load_calibration(str(path), tmp_path, "query.threshold.calibration")
    assert (record.threshold, record.data.name, record.data.version) == (0.6, "utkface-dev", 3)


@pytest.mark.parametrize("outside", ["/etc/hostname", "../embedder.onnx", "sub/../../embedder.onnx"])
def test_pack_naming_a_file_outside_its_folder_is_refused(tmp_path: Path, outside: str) -> None:
    pack = write_pack(tmp_path / "pack", MANIFEST, FILES)
    (tmp_path / "embedder.onnx").write_bytes(FILES["embedder"])
    manifest = json.loads(json.dumps(pack.manifest))
    manifest["embedder"]["file"] = outside
    manifest["model_id"] = derive_model_id(manifest)  # a consistent, deliberately crafted manifest
    (tmp_path / "pack" / "pack.json").write_text(json.dumps(manifest))
    with pytest.raises(PackError, match="not a file inside the pack folder"):
        load_pack(tmp_path / "pack")


def test_too_large_hint_names_the_real_key() -> None:
    from tests.fixtures.images import png_claiming

    decoded = decode_image(png_claiming(30000, 30000), max_pixels=1000)
    assert decoded.status == "too_large" and "embed.max_pixels" in decoded.error
