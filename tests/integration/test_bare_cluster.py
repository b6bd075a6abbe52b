"""Lineup on a cluster whose worker has only a bare Python: the worker runs in a mount namespace in
which the project checkout and $LINEUP_HOME are empty folders, its Python is a fresh venv with nothing
installed, and its Spark is the cluster's own. embed -> index -> query are submitted with exactly the
flags `lineup submit-args --cluster` prints (the archives of `lineup package`), and give what a local run
gives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jobs.common.config import load_config
from jobs.common.paths import lineup_home
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from tests.fixtures.cluster import spark_bin, standalone_cluster
from tests.fixtures.processes import CEILING_S

pytestmark = [pytest.mark.cluster, pytest.mark.heavy, pytest.mark.data]

REPO_ROOT = Path(__file__).resolve().parents[2]
PEOPLE = ["Zico", "AJ_Cook", "Aaron_Peirsol", "Abdullah_Gul"]
# Mounts first (Spark reached through a bind mount), then the checkout and $LINEUP_HOME hidden.
HIDE = """set -e
mount --bind "$1" "$2"
mount -t tmpfs tmpfs "$3"
mount -t tmpfs tmpfs "$4"
shift 4
exec "$@"
"""


def lineup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=CEILING_S, cwd=REPO_ROOT
    )


def submit(flags: list[str], master_url: str, main: str, *sets: str, exit_code: int = 0) -> dict:
    command = [spark_bin("spark-submit"), "--master", master_url, *flags, "--conf", "spark.ui.enabled=false"]
    command += [str(REPO_ROOT / "jobs" / main / "main.py"), *(arg for s in sets for arg in ("--set", s))]
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=CEILING_S)
    assert done.returncode == exit_code, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare(1)")
def test_embed_index_query_on_a_worker_without_lineup(spark, tmp_path: Path, shared_data: Path) -> None:
    package = lineup("package", "--out", str(tmp_path / "package"))
    assert package.returncode == 0, package.stderr[-3000:]
    built = json.loads(package.stdout)
    assert "pyspark" not in {name.lower() for name in built["distributions"]}
    flags_run = lineup("submit-args", "--cluster", "--package-dir", str(tmp_path / "package"), "--json")
    assert flags_run.returncode == 0, flags_run.stderr
    flags = json.loads(flags_run.stdout)

    images = tmp_path / "images"
    for person in PEOPLE:
        shutil.copytree(shared_data / "lfw" / "images" / person, images / person)
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    cluster_spark = tmp_path / "cluster-spark"
    cluster_spark.mkdir()
    import pyspark

    wrapper = ["unshare", "-m", "sh", "-c", HIDE, "hide"]
    wrapper += [str(Path(pyspark.__file__).parent), str(cluster_spark), str(REPO_ROOT), str(lineup_home())]
    worker_env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SPARK_HOME": str(cluster_spark),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_NO_DAEMONIZE": "1",
        "SPARK_LOG_DIR": str(tmp_path),
        "PYSPARK_PYTHON": str(bare / "bin" / "python"),
    }
    sets = [f"embed.input.path={images}", "embed.labels.subject_from_path=([^/]+)/[^/]+$"]
    with standalone_cluster(tmp_path, wrapper, worker_env, cluster_spark) as (master_url, worker_dir):
        embedded = submit(flags, master_url, "embed", *sets, f"embed.table_path={tmp_path / 'faces'}")
        index = submit(
            flags, master_url, "index", f"index.faces_table={tmp_path / 'faces'}", f"index.index_dir={tmp_path / 'ix'}"
        )
        query = submit(
            flags,
            master_url,
            "query",
            f"query.probes.faces_table={tmp_path / 'faces'}",
            f"query.index_dir={tmp_path / 'ix'}",
            f"query.matches_table={tmp_path / 'matches'}",
            f"query.identities_table={tmp_path / 'identities'}",
            "query.k=3",
        )
        shipped = sorted(p.name for p in worker_dir.rglob("lineup_*") if p.is_dir())
        # An environment the executors cannot start is refused before any work, in one line (exit 2).
        broken = [*flags, "--conf", "spark.pyspark.python=./lineup_env/bin/python9"]
        refused = submit(broken, master_url, "index", f"index.faces_table={tmp_path / 'faces'}", exit_code=2)
    assert "the executors cannot start ./lineup_env/bin/python9" in refused["error"]
    assert embedded["status"] == index["status"] == query["status"] == "ok"
    assert "lineup_env" in shipped and "lineup_pack" in shipped  # the executors ran from the archives

    run_embed(
        load_config(EmbedConfig, None, [*sets, f"embed.table_path={tmp_path / 'local_faces'}"]),
        spark,
    )
    on_cluster = {r.face_id: r for r in spark.read.format("delta").load(str(tmp_path / "faces")).collect()}
    local = {r.face_id: r for r in spark.read.format("delta").load(str(tmp_path / "local_faces")).collect()}
    assert on_cluster.keys() == local.keys() and len(local) >= len(PEOPLE)
    for face_id, row in local.items():
        assert row.subject_id == on_cluster[face_id].subject_id
        assert np.allclose(row.embedding, on_cluster[face_id].embedding, atol=1e-5)
    matches = spark.read.format("delta").load(str(tmp_path / "matches")).where("rank = 1").collect()
    assert all(m.gallery_face_id == m.probe_face_id for m in matches if m.gallery_face_id is not None)
