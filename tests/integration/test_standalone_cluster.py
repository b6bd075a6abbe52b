"""A real cluster: a standalone master and worker as separate processes on loopback, and a job submitted
to them with spark-submit through Lineup's session factory (Delta write, MERGE, time travel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.common.config import SparkSettings
from jobs.common.spark import submit_args
from tests.fixtures.cluster import spark_bin, standalone_cluster
from tests.fixtures.processes import CEILING_S

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

JOB = Path(__file__).with_name("cluster_job.py")


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with standalone_cluster(tmp_path) as running:
        yield running


def test_job_runs_unchanged_on_a_standalone_cluster(cluster, tmp_path: Path) -> None:
    master_url, worker_dir = cluster
    table_path = tmp_path / "cluster_table"
    command = [
        spark_bin("spark-submit"),
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
