"""Crash and resume: kill the embed job's driver midway, rerun it (this time through spark-submit and
jobs/embed/main.py, unchanged), and demand exactly the rows a clean run produces."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.common.config import SparkSettings
from jobs.common.spark import submit_args
from tests.fixtures.processes import CEILING_S

pytestmark = [pytest.mark.slow, pytest.mark.data]

REPO_ROOT = Path(__file__).resolve().parents[2]
# Small chunks, so a kill after the second commit lands midway: the chunks after it are embedded while
# commits land one at a time, and with 8-file chunks (three in all) the third was sometimes committed
# before the test saw the second.
FILES_PER_COMMIT = 3


def job_flags(archive: Path, table: Path, data_root: Path) -> list[str]:
    return [
        "--conf",
        str(REPO_ROOT / "conf" / "embed.yaml"),
        "--set",
        f"embed.input.path={archive}",
        "--set",
        f"embed.table_path={table}",
        "--set",
        f"spark.data_root={data_root}",
        "--set",
        "spark.master=local[2]",
        "--set",
        "spark.shuffle_partitions=2",
        "--set",
        f"embed.files_per_commit={FILES_PER_COMMIT}",
        "--set",
        "embed.files_per_task=4",
    ]


def lineup(*args: str) -> subprocess.Popen:
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "embed", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        text=True,
    )


def spark_submit(*args: str) -> subprocess.CompletedProcess:
    import pyspark

    spark_submit = str(Path(pyspark.__file__).parent / "bin" / "spark-submit")
    command = [
        spark_submit,
        "--master",
        "local[2]",
        *submit_args(SparkSettings()),
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--conf",
        f"spark.pyspark.driver.python={sys.executable}",
        str(REPO_ROOT / "jobs" / "embed" / "main.py"),
        *args,
    ]
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=CEILING_S)


def wait_for_version(table: Path, version: int, process: subprocess.Popen, timeout_s: float) -> None:
    commit = table / "_delta_log" / f"{version:020d}.json"
    deadline = time.monotonic() + timeout_s
    while not commit.exists():
        if process.poll() is not None:
            raise AssertionError(f"job ended before commit {version}: {process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no commit {version} within {timeout_s} s")
        time.sleep(0.2)


def rows(spark, table: Path) -> list[tuple]:
    frame = spark.read.format("delta").load(str(table))
    return sorted((r.face_id, r.source_path, r.status, tuple(r.embedding or ())) for r in frame.collect())


def test_killed_run_resumes_to_the_clean_result(spark, tmp_path: Path, shared_data: Path) -> None:
    archive = tmp_path / "archive"
    people = sorted((shared_data / "lfw" / "images").iterdir())[:24]
    for person in people:
        (archive / person.name).mkdir(parents=True)
        for image in sorted(person.glob("*.jpg"))[:1]:
            shutil.copy(image, archive / person.name / image.name)
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"

    clean_run = lineup(*job_flags(archive, clean, tmp_path / "d1"))
    _, clean_err = clean_run.communicate(timeout=CEILING_S)
    assert clean_run.returncode == 0, clean_err[-3000:]

    victim = lineup(*job_flags(archive, crashed, tmp_path / "d2"))
    wait_for_version(crashed, 2, victim, timeout_s=CEILING_S)  # table created, two chunks committed
    os.killpg(victim.pid, signal.SIGKILL)  # the driver and its JVM, no chance to clean up
    victim.wait(timeout=CEILING_S)
    partial = rows(spark, crashed)
    assert 0 < len(partial) < len(rows(spark, clean)), "the kill must land midway"

    resumed = spark_submit(*job_flags(archive, crashed, tmp_path / "d2"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(resumed.stdout.splitlines()) == 1, resumed.stdout[:3000]  # spark-submit: only the JSON line
    [line] = resumed.stdout.splitlines()
    summary = json.loads(line)
    assert summary["files_seen"] == len(people)
    assert summary["files_skipped_known"] >= 2 * FILES_PER_COMMIT  # the committed chunks are not embedded again

    expected, actual = rows(spark, clean), rows(spark, crashed)
    assert actual == expected
    assert len({row[0] for row in actual}) == len(actual)
