"""A real cluster: a standalone master and worker as separate processes on loopback, and a job submitted
to them with spark-submit through Lineup's session factory (Delta write, MERGE, time travel)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.common.config import SparkSettings
from jobs.common.spark import submit_args
from tests.fixtures.processes import CEILING_S

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

JOB = Path(__file__).with_name("cluster_job.py")


def _spark_bin(name: str) -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_log(log_path: Path, needle: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early:\n{log_path.read_text()[-3000:]}")
        if needle in log_path.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not seen in {timeout_s} s:\n{log_path.read_text()[-3000:]}")


def _start(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)


@pytest.fixture()
def standalone_cluster(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR=str(tmp_path), SPARK_NO_DAEMONIZE="1")
    master_port, worker_dir = _free_port(), tmp_path / "worker"
    master_url = f"spark://127.0.0.1:{master_port}"
    master_log, worker_log = tmp_path / "master.log", tmp_path / "worker.log"
    master = _start(
        [
            _spark_bin("spark-class"),
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(master_port),
            "--webui-port",
            str(_free_port()),
        ],
        master_log,
        env,
    )
    processes = [master]
    try:
        _wait_for_log(master_log, "I have been elected leader", master, CEILING_S)
        worker = _start(
            [
                _spark_bin("spark-class"),
                "org.apache.spark.deploy.worker.Worker",
                master_url,
                "--host",
                "127.0.0.1",
                "--cores",
                "2",
                "--memory",
                "2g",
                "--webui-port",
                str(_free_port()),
                "--work-dir",
                str(worker_dir),
            ],
            worker_log,
            env,
        )
        processes.append(worker)
        _wait_for_log(worker_log, "Successfully registered with master", worker, CEILING_S)
        yield master_url, worker_dir
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    assert all(process.poll() is not None for process in processes)


def test_job_runs_unchanged_on_a_standalone_cluster(standalone_cluster, tmp_path: Path) -> None:
    master_url, worker_dir = standalone_cluster
    table_path = tmp_path / "cluster_table"
    command = [
        _spark_bin("spark-submit"),
        "--master",
        master_url,
        *submit_args(SparkSettings()),
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--conf",
        f"spark.pyspark.driver.python={sys.executable}",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.sql.shuffle.partitions=3",  # the submitter's choice must survive the factory
        "--conf",
        "spark.databricks.delta.snapshotPartitions=2",
        str(JOB),
        str(table_path),
    ]
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=CEILING_S)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["master"] == master_url
    assert report["shuffle_partitions"] == "3"
    assert report["version_0"] == [[1, "a"], [2, "b"]]
    assert report["latest"] == [[1, "a"], [2, "B"], [3, "c"]]
    assert [op for _, op in report["operations"]] == ["WRITE", "MERGE"]
    assert report["task_dirs"] and all(d.startswith(str(worker_dir)) for d in report["task_dirs"])
