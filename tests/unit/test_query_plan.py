"""Query planning decisions that need no Spark: which probe rows an archive owns, which search plan."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from jobs.faces.config import InputSettings
from jobs.faces.plan import source_prefix as _source_prefix
from jobs.query.plan import choose_plan
from tests.fixtures.manifests import manifest_of


def test_an_archive_owns_only_its_own_source_paths(tmp_path: Path) -> None:
    folder = tmp_path / "probes"
    folder.mkdir()
    prefix = _source_prefix(InputSettings(kind="dir", path=str(folder)))
    assert f"{folder}/a/1.jpg".startswith(prefix) and not f"{folder}2/a/1.jpg".startswith(prefix)
    tar = tmp_path / "p.tar"
    tar.write_bytes(b"")
    assert _source_prefix(InputSettings(kind="tar", path=str(tar))) == f"{tar}!"
    assert _source_prefix(InputSettings(kind="tar", path=str(folder))) == f"{folder}/"
    assert _source_prefix(InputSettings(kind="table", path="/t/bytes")) == "/t/bytes#"


def test_plan_follows_the_index_size(tmp_path: Path) -> None:
    (tmp_path / "shard-0.faiss").write_bytes(b"x" * 2048)
    manifest = manifest_of(shards=[{"shard": 0, "file": "shard-0.faiss", "sha256": "x", "vectors": 1}])
    small = SimpleNamespace(plan="auto", worker_index_gb=1.0)
    tiny = SimpleNamespace(plan="auto", worker_index_gb=1e-6)  # about 1 KiB
    assert choose_plan(tmp_path, manifest, small) == "all_shards"
    assert choose_plan(tmp_path, manifest, tiny) == "per_shard"
    assert choose_plan(tmp_path, manifest, SimpleNamespace(plan="per_shard", worker_index_gb=9.0)) == "per_shard"
