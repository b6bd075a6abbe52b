"""The location layer against the suite's local S3 server: URIs as Spark and fsspec name them, the
sha256-keyed cache, shards refused when they differ from the manifest, and preflight naming the key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from jobs.common import storage
from jobs.common.config import LineupConfig, load_config, location_settings
from jobs.common.errors import UserError
from jobs.common.locations import Locations, resolve


def test_locations_keep_uris_and_map_s3_for_spark(tmp_path: Path) -> None:
    places = Locations("s3://lake/lineup")
    assert str(places.data_root()) == "s3a://lake/lineup"
    assert places.table(None, "faces") == "s3a://lake/lineup/tables/faces"
    assert str(places.index_dir(None)) == "s3a://lake/lineup/indexes/faces"
    assert str(places.report_dir("gs://b/reports")) == "gs://b/reports"
    assert resolve(f"file://{tmp_path}/x/../y") == str(tmp_path / "y")
    assert isinstance(Locations(str(tmp_path)).index_dir(None), Path)  # local stays a pathlib path


def test_cached_copy_fetches_once_per_sha256(s3_server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LINEUP_CACHE_DIR", str(tmp_path / "cache"))
    bucket = s3_server.new_bucket()
    remote = storage.upath(f"{bucket}/shard.faiss")
    remote.write_bytes(b"shard bytes")
    digest = hashlib.sha256(b"shard bytes").hexdigest()
    first = storage.cached_copy(remote, digest)
    assert first.read_bytes() == b"shard bytes" and str(first).startswith(str(tmp_path / "cache"))
    remote.unlink()  # a second read must come from the cache, not the store
    assert storage.cached_copy(remote, digest) == first
    remote.write_bytes(b"other bytes")
    assert storage.cached_copy(remote, "0" * 64) is None  # bytes that differ from the sha256 are not kept
    assert not any(p.name == "0" * 64 for p in (tmp_path / "cache").rglob("*"))


def test_a_tampered_remote_shard_is_refused(s3_server, tmp_path: Path, monkeypatch) -> None:
    import faiss

    from jobs.shards.files import load_index, serialize, sha256_bytes
    from jobs.shards.manifest import IndexFileError, write_manifest
    from tests.fixtures.manifests import manifest_of

    monkeypatch.setenv("LINEUP_CACHE_DIR", str(tmp_path / "cache"))
    index_dir = storage.upath(f"{s3_server.new_bucket()}/index")
    shard = faiss.IndexIDMap(faiss.IndexFlatIP(4))
    shard.add_with_ids(np.eye(4, dtype=np.float32), np.arange(4, dtype=np.int64))
    data = serialize(shard)
    storage.write_atomically(index_dir / "shard-0000.g1.faiss", data)
    entry = {"shard": 0, "file": "shard-0000.g1.faiss", "sha256": sha256_bytes(data), "vectors": 4}
    write_manifest(index_dir, manifest_of(vectors=4, shards=[entry]))
    scores, ids = load_index(str(index_dir)).search(np.eye(4, dtype=np.float32)[:1], 1)
    assert ids.tolist() == [[0]]
    storage.write_atomically(index_dir / "shard-0000.g1.faiss", data[:-1] + bytes([data[-1] ^ 0xFF]))
    monkeypatch.setenv("LINEUP_CACHE_DIR", str(tmp_path / "fresh-cache"))
    with pytest.raises(IndexFileError, match="sha256"):
        load_index(str(index_dir))


def test_preflight_names_the_setting_of_a_missing_bucket(s3_server) -> None:
    config = load_config(LineupConfig, None, ["runs_table=s3a://lineup-no-such-bucket/runs"])
    with pytest.raises(UserError, match=r"^runs_table s3a://lineup-no-such-bucket/runs: the bucket"):
        storage.check_locations(location_settings(config))
    storage.check_locations(
        location_settings(load_config(LineupConfig, None, [f"runs_table={s3_server.new_bucket()}/runs"]))
    )


def test_preflight_checks_only_declared_location_settings(s3_server) -> None:
    """An S3 endpoint given the Hadoop way (EMR, MinIO) and a forget selector's source paths look like URIs
    but are no place Lineup reads or writes: the preflight leaves them alone and still checks real ones."""
    from jobs.forget.config import ForgetConfig

    endpoint = '{"spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9", "spark.hadoop.fs.s3a.path.style.access": "true"}'
    config = load_config(
        ForgetConfig,
        None,
        [
            f"spark.extra_conf={endpoint}",
            "forget.selector.kind=source_paths",
            "forget.selector.values=[s3a://lineup-no-such-bucket/a.jpg]",
            f"runs_table={s3_server.new_bucket()}/runs",
        ],
    )
    storage.check_locations(
        location_settings(config)
    )  # the endpoint (a closed port) and the selector's paths are not probed
    keys = [key for key, _ in location_settings(config)]
    assert "runs_table" in keys and not [key for key in keys if "extra_conf" in key or "selector.values" in key]
    broken = load_config(ForgetConfig, None, [f"spark.extra_conf={endpoint}", "forget.older_than=1d",
                                              "runs_table=s3a://lineup-no-such-bucket/runs"])  # fmt: skip
    with pytest.raises(UserError, match=r"^runs_table s3a://lineup-no-such-bucket/runs"):
        storage.check_locations(location_settings(broken))
