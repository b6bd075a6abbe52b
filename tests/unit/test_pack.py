import json
from pathlib import Path

import pytest

from jobs.models.pack import PackError, load_pack, write_pack

MANIFEST = {
    "name": "toy",
    "detector": {"file": "detector.onnx", "kind": "yunet"},
    "alignment": {"template": [[1.0, 2.0]], "chip_size": 150},
    "embedder": {"file": "embedder.onnx", "output_dim": 128, "mean": [1.0, 2.0, 3.0]},
    "metric": "cosine",
}
FILES = {"detector": b"detector bytes", "embedder": b"embedder bytes"}


def test_round_trip_fills_hashes_and_id(tmp_path: Path) -> None:
    pack = write_pack(tmp_path / "pack", MANIFEST, FILES)
    assert pack.model_id.startswith("toy-") and len(pack.model_id) == len("toy-") + 16
    assert load_pack(tmp_path / "pack").manifest == pack.manifest


def test_model_id_follows_preprocessing(tmp_path: Path) -> None:
    first = write_pack(tmp_path / "a", MANIFEST, FILES)
    changed = json.loads(json.dumps(MANIFEST))
    changed["embedder"]["mean"] = [1.0, 2.0, 3.5]
    assert write_pack(tmp_path / "b", changed, FILES).model_id != first.model_id
    assert write_pack(tmp_path / "c", MANIFEST, FILES).model_id == first.model_id


@pytest.mark.parametrize("target", ["detector.onnx", "embedder.onnx", "pack.json"])
def test_one_changed_byte_is_refused(tmp_path: Path, target: str) -> None:
    write_pack(tmp_path / "pack", MANIFEST, FILES)
    path = tmp_path / "pack" / target
    data = bytearray(path.read_bytes())
    index = data.find(b"128") if target == "pack.json" else 0  # pack.json: still valid JSON afterwards
    data[index] = ord("2") if target == "pack.json" else data[index] ^ 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(PackError) as error:
        load_pack(tmp_path / "pack")
    assert str(tmp_path / "pack") in str(error.value)


def test_missing_pack_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="build-default"):
        load_pack(tmp_path / "nowhere")
