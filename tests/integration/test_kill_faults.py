"""Faults beyond the driver: SIGKILL one Spark Python worker during an embed and during a query (Spark
retries the task; the result equals a clean run, nothing duplicated), and kill `lineup query` midway (no
run recorded as succeeded; a rerun gives the clean result)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from jobs.common.config import load_config
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from tests.fixtures.faces import clustered, write_faces
from tests.fixtures.processes import (
    CEILING_S,
    busy_python_workers,
    commit_exists,
    finish,
    start_lineup,
    stderr_of,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

REPO_ROOT = Path(__file__).resolve().parents[2]
TASK_FAILED = "Lost task"  # Spark's TaskSetManager warning when a task attempt fails


def kill_a_running_python_worker(process, kills: int = 3) -> None:
    """SIGKILL Python workers that are running a task until Spark reports a lost task (a worker can
    finish its task between being seen busy and the kill). At most `kills` kills: fewer than the local
    master's 4 tries, so even one task hit every time still succeeds."""
    for _ in range(kills):
        victim = wait_for(lambda: busy_python_workers(process.pid), process, "a Python worker running a task")[0]
        os.kill(victim, signal.SIGKILL)
        effect = wait_for(lambda pid=victim: kill_effect(process, pid), process, "the kill's effect")
        if effect != "missed":
            return


def kill_effect(process, victim: int) -> str | None:
    """'lost' once Spark reports the lost task, 'missed' when another worker runs a task first (the victim
    was between tasks), 'ended' when the job ended; None while undecided."""
    if TASK_FAILED in stderr_of(process):
        return "lost"
    if process.poll() is not None:
        return "ended"
    return "missed" if set(busy_python_workers(process.pid)) - {victim} else None


def flags(*pairs: str) -> list[str]:
    return [part for pair in pairs for part in ("--set", pair)]


def embed_flags(archive: Path, table: Path, data_root: Path) -> list[str]:
    return [
        "embed",
        "--conf",
        str(REPO_ROOT / "conf" / "embed.yaml"),
        *flags(
            f"embed.input.path={archive}",
            f"embed.table_path={table}",
            f"spark.data_root={data_root}",
            "spark.master=local[2]",
            "spark.shuffle_partitions=2",
            "embed.files_per_task=2",
        ),
    ]


def face_rows(spark, table: Path) -> list[tuple]:
    frame = spark.read.format("delta").load(str(table))
    return sorted((r.face_id, r.source_path, r.status, tuple(r.embedding or ())) for r in frame.collect())


@pytest.mark.data
def test_killed_python_worker_during_embed_is_retried(spark, tmp_path: Path, shared_data: Path) -> None:
    archive = tmp_path / "archive"
    for person in sorted((shared_data / "lfw" / "images").iterdir())[:16]:
        (archive / person.name).mkdir(parents=True)
        shutil.copy(sorted(person.glob("*.jpg"))[0], archive / person.name)
    clean = start_lineup(*embed_flags(archive, tmp_path / "clean", tmp_path / "d1"))
    finish(clean)
    assert clean.returncode == 0, stderr_of(clean)[-3000:]

    faulted = start_lineup(*embed_flags(archive, tmp_path / "faulted", tmp_path / "d2"))
    kill_a_running_python_worker(faulted)
    summary = json.loads(finish(faulted).strip().splitlines()[-1])
    assert faulted.returncode == 0, stderr_of(faulted)[-3000:]
    assert TASK_FAILED in stderr_of(faulted), "the kill must hit a running task"
    assert summary["files_seen"] == 16 == summary["files_processed"]
    actual = face_rows(spark, tmp_path / "faulted")
    assert actual == face_rows(spark, tmp_path / "clean")
    assert len({row[0] for row in actual}) == len(actual)


@pytest.fixture(scope="module")
def query_world(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20,000-face gallery (4 exact shards), 4,000 probes, and one clean query run (`clean.json`)."""
    tmp_path = tmp_path_factory.mktemp("kill-query")
    gallery_ids = np.arange(1, 20_001, dtype=np.int64) * 104729
    subjects = [f"s{i % 5000}" for i in range(20_000)]
    write_faces(spark, tmp_path / "gallery", gallery_ids, clustered(20_000, dim=64, seed=5), subjects=subjects)
    index_flags = [f"index.faces_table={tmp_path / 'gallery'}", f"index.index_dir={tmp_path / 'index'}"]
    run_index(load_config(IndexConfig, None, [*index_flags, "index.shards=4"]), spark)
    probe_ids = np.arange(10**9, 10**9 + 4000, dtype=np.int64)
    write_faces(spark, tmp_path / "probes", probe_ids, clustered(4000, dim=64, seed=6))
    (tmp_path / "clean.json").write_text(json.dumps(run_query_process(tmp_path, "clean")))
    return tmp_path


def query_flags(world: Path, name: str) -> list[str]:
    return [
        "query",
        "--conf",
        str(REPO_ROOT / "conf" / "query.yaml"),
        *flags(
            f"spark.data_root={world / 'data'}",
            "spark.master=local[2]",
            "spark.shuffle_partitions=2",
            f"query.probes.faces_table={world / 'probes'}",
            f"query.index_dir={world / 'index'}",
            f"query.matches_table={world / name / 'matches'}",
            f"query.identities_table={world / name / 'identities'}",
            f"runs_table={world / 'runs'}",
            "query.k=10",
            "query.probe_partitions=16",
            "query.threshold.value=0.5",
        ),
    ]


def match_rows(spark, table: Path, run_id: str) -> list[tuple]:
    frame = spark.read.format("delta").load(str(table)).where(f"run_id = '{run_id}'")
    return sorted((r.probe_face_id, r.rank, r.gallery_face_id, round(r.score, 5)) for r in frame.collect())


def run_query_process(world: Path, name: str) -> dict:
    process = start_lineup(*query_flags(world, name))
    stdout = finish(process)
    assert process.returncode == 0, stderr_of(process)[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def test_killed_python_worker_during_query_is_retried(spark, query_world: Path) -> None:
    clean = json.loads((query_world / "clean.json").read_text())
    faulted = start_lineup(*query_flags(query_world, "faulted"))
    kill_a_running_python_worker(faulted)
    summary = json.loads(finish(faulted).strip().splitlines()[-1])
    assert faulted.returncode == 0, stderr_of(faulted)[-3000:]
    assert TASK_FAILED in stderr_of(faulted), "the kill must hit a running task"
    expected = match_rows(spark, query_world / "clean" / "matches", clean["run_id"])
    assert len(expected) == 4000 * 10
    assert match_rows(spark, query_world / "faulted" / "matches", summary["run_id"]) == expected


def test_killed_query_is_not_recorded_as_succeeded_and_reruns_clean(spark, query_world: Path) -> None:
    clean = json.loads((query_world / "clean.json").read_text())
    victim = start_lineup(*query_flags(query_world, "killed"))
    matches = query_world / "killed" / "matches"
    wait_for(commit_exists(matches, 0), victim, "the first matches commit", poll_s=0.01)
    os.killpg(victim.pid, signal.SIGKILL)  # the driver and its JVM: no chance to clean up
    victim.wait(timeout=CEILING_S)
    runs = spark.read.format("delta").load(str(query_world / "runs"))
    succeeded = {r.run_id for r in runs.where("status = 'ok'").collect()}
    half = {r.run_id for r in spark.read.format("delta").load(str(matches)).select("run_id").distinct().collect()}
    assert half and not half & succeeded  # the half run's rows carry an id no succeeded run has

    rerun = run_query_process(query_world, "killed")
    assert rerun["run_id"] in {r.run_id for r in runs.where("status = 'ok'").collect()}
    assert match_rows(spark, matches, rerun["run_id"]) == match_rows(
        spark, query_world / "clean" / "matches", clean["run_id"]
    )
