"""The index job on synthetic faces tables: sharded exact == single exact, recorded recall is real,
incremental update == full rebuild, tampering and bad galleries refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jobs.common.config import load_config
from jobs.common.errors import UserError
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.shards.build import exact_top_k, recall_at_k, without_queries
from jobs.shards.files import load_index, verify_index
from tests.fixtures.faces import clustered, write_faces

pytestmark = pytest.mark.slow


def config(table: Path, out: Path, *extra: str) -> IndexConfig:
    return load_config(
        IndexConfig,
        None,
        [f"index.faces_table={table}", f"index.index_dir={out}", "index.shards=3", "index.holdout_queries=200", *extra],
    )


def test_sharded_exact_search_equals_single_exact(spark, tmp_path: Path) -> None:
    ids = np.arange(1, 3001, dtype=np.int64) * 7919
    vectors = clustered(3000)
    write_faces(spark, tmp_path / "faces", ids, vectors)
    summary = run_index(config(tmp_path / "faces", tmp_path / "index"), spark)
    assert summary["factory"] == "Flat" and summary["vectors"] == 3000 and summary["recall_at_k"] == 1.0
    index = load_index(tmp_path / "index")
    assert sorted(entry.vectors for entry in index.manifest.shards) != [0, 0, 3000]
    for entry in index.manifest.shards:
        shard_ids = ids[ids % 3 == entry.shard]
        assert entry.vectors == len(shard_ids)
        assert (entry.min_id, entry.max_id) == (shard_ids.min(), shard_ids.max())
    queries = clustered(50, seed=9)
    _, found = index.search(queries, 10)
    _, expected = exact_top_k(vectors, ids, queries, 10)
    assert np.array_equal(found, expected)


def test_approximate_recall_in_manifest_is_recomputable(spark, tmp_path: Path) -> None:
    ids = np.arange(5000, dtype=np.int64) + 10
    vectors = clustered(5000, dim=32, seed=3)
    write_faces(spark, tmp_path / "faces", ids, vectors)
    settings = config(tmp_path / "faces", tmp_path / "index", "index.factory=IVF32,Flat", "index.recall_floor=0.95")
    summary = run_index(settings, spark)
    assert summary["search_param"] == "nprobe" and summary["recall_at_k"] >= 0.95
    index = load_index(tmp_path / "index")  # applies the stored nprobe
    rng = np.random.default_rng(0)
    picked = rng.choice(len(ids), size=200, replace=False)
    # Each held-out vector is left out of its own results: it would find itself first.
    _, truth = exact_top_k(vectors, ids, vectors[picked], 11)
    _, found = index.search(vectors[picked], 11)
    assert (truth[:, 0] == ids[picked]).all()
    truth, found = without_queries(truth, ids[picked], 10), without_queries(found, ids[picked], 10)
    assert not (found == ids[picked][:, None]).any()
    assert recall_at_k(found, truth) == pytest.approx(summary["recall_at_k"], abs=1e-4)


def test_incremental_update_equals_full_rebuild(spark, tmp_path: Path) -> None:
    from delta.tables import DeltaTable

    ids = np.arange(1, 2001, dtype=np.int64)
    vectors = clustered(2200, seed=5)
    write_faces(spark, tmp_path / "faces", ids, vectors[:2000])
    run_index(config(tmp_path / "faces", tmp_path / "index"), spark)
    write_faces(spark, tmp_path / "faces", np.arange(2001, 2201, dtype=np.int64), vectors[2000:])  # +10%
    DeltaTable.forPath(spark, str(tmp_path / "faces")).delete("face_id <= 20")  # and 20 removed
    update = run_index(config(tmp_path / "faces", tmp_path / "index", "index.update=true"), spark)
    assert update["added"] == 200 and update["removed"] == 20 and update["rebuild_advised"] is False
    run_index(config(tmp_path / "faces", tmp_path / "rebuilt"), spark)
    queries = clustered(40, seed=11)
    _, incremental = load_index(tmp_path / "index").search(queries, 10)
    _, rebuilt = load_index(tmp_path / "rebuilt").search(queries, 10)
    assert np.array_equal(incremental, rebuilt)
    assert not np.isin(incremental, np.arange(1, 21)).any()


def test_tampered_shard_is_refused(spark, tmp_path: Path) -> None:
    write_faces(spark, tmp_path / "faces", np.arange(300, dtype=np.int64), clustered(300))
    run_index(config(tmp_path / "faces", tmp_path / "index"), spark)
    shard = sorted((tmp_path / "index").glob("shard-*.faiss"))[0]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        load_index(tmp_path / "index")


@pytest.mark.parametrize("problem", ["mixed_models", "mixed_dims", "empty"])
def test_bad_galleries_are_refused(spark, tmp_path: Path, problem: str) -> None:
    table = tmp_path / "faces"
    if problem == "mixed_models":
        write_faces(spark, table, np.arange(10, dtype=np.int64), clustered(10), model_id="a")
        write_faces(spark, table, np.arange(10, 20, dtype=np.int64), clustered(10), model_id="b")
        expected = "mixes models"
    elif problem == "mixed_dims":
        write_faces(spark, table, np.arange(10, dtype=np.int64), clustered(10, dim=16))
        write_faces(spark, table, np.arange(10, 20, dtype=np.int64), clustered(10, dim=8))
        expected = "several sizes"
    else:
        write_faces(spark, table, np.arange(0, dtype=np.int64), clustered(1)[:0])
        expected = "no faces"
    with pytest.raises(UserError, match=expected):
        run_index(config(table, tmp_path / "index"), spark)


def test_a_fast_scan_index_of_vectors_that_are_not_unit_is_refused(spark, tmp_path: Path) -> None:
    """A fast-scan index ranks by L2, the cosine order only for unit vectors: a table of other vectors is
    refused with the face_id and the fix (exit 2), and no manifest is written."""
    ids = np.arange(1, 2001, dtype=np.int64)
    vectors = clustered(2000, dim=32, seed=4)
    vectors[1234] *= 2.0
    write_faces(spark, tmp_path / "faces", ids, vectors)
    settings = config(tmp_path / "faces", tmp_path / "index", "index.factory=IVF16,PQ16x4fs,RFlat")
    with pytest.raises(
        UserError, match=r"index.faces_table: face_id 1235 has an embedding of norm 2.0000.*index.factory"
    ):
        run_index(settings, spark)
    assert not (tmp_path / "index" / "manifest.json").exists()


@pytest.mark.parametrize("which", ["shard", "removed"])
def test_index_files_that_are_links_are_refused(spark, tmp_path: Path, which: str) -> None:
    """A shard or removed-ids file replaced by a link to a file outside the folder (same bytes, so its
    sha256 matches) is refused before FAISS reads it: exit 2, naming the file."""
    write_faces(spark, tmp_path / "faces", np.arange(300, dtype=np.int64), clustered(300))
    run_index(config(tmp_path / "faces", tmp_path / "index"), spark)
    index_dir = tmp_path / "index"
    if which == "removed":  # an update after rows left the table writes a removed-ids file
        from delta.tables import DeltaTable

        DeltaTable.forPath(spark, str(tmp_path / "faces")).delete("face_id < 10")
        run_index(load_config(IndexConfig, None, [f"index.index_dir={index_dir}", "index.update=true"]), spark)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    name = manifest["shards"][0]["file"] if which == "shard" else manifest["removed_file"]
    outside = tmp_path / "elsewhere.bin"
    shutil.move(index_dir / name, outside)
    (index_dir / name).symlink_to(outside)
    for reader in (load_index, verify_index):
        with pytest.raises(UserError, match="link or not a regular file"):
            reader(index_dir)


def test_a_second_update_after_removals_keeps_the_removed_ids(spark, tmp_path: Path) -> None:
    """Two updates, each after rows left the table: the second one merges the first's removed-ids file
    (and supersedes the generation in force, whose files stay until a vacuum)."""
    from delta.tables import DeltaTable

    write_faces(spark, tmp_path / "faces", np.arange(300, dtype=np.int64), clustered(300))
    run_index(config(tmp_path / "faces", tmp_path / "index"), spark)
    update = load_config(IndexConfig, None, [f"index.index_dir={tmp_path / 'index'}", "index.update=true"])
    for cut in ("face_id < 10", "face_id < 20"):
        DeltaTable.forPath(spark, str(tmp_path / "faces")).delete(cut)
        summary = run_index(update, spark)
    assert summary["removed"] == 20
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["superseded"] and all(
        (tmp_path / "index" / f).is_file() for e in manifest["superseded"] for f in e["files"]
    )
