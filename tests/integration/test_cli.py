import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.processes import CEILING_S


def run_lineup(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, env=env, timeout=CEILING_S
    )


@pytest.mark.slow
def test_doctor_reports_versions_and_session_start() -> None:
    result = run_lineup("doctor", "--set", "spark.master=local[2]")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "doctor prints exactly one line on stdout"
    report = json.loads(lines[0])
    for key in ["python", "java", "pyspark", "spark", "delta-spark", "onnxruntime", "faiss-cpu"]:
        assert report[key], key
    assert report["status"] == "ok"
    assert report["spark_session_start_s"] > 0
    assert report["delta_jars"] and all(Path(p).is_file() for p in report["delta_jars"])
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    assert report["cpu"]["vnni"] == ("avx512_vnni" in flags or "avx_vnni" in flags)


def test_doctor_without_jars_exits_2_naming_the_fix(tmp_path: Path) -> None:
    result = run_lineup("doctor", env=dict(os.environ, LINEUP_HOME=str(tmp_path)))
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and "lineup setup" in message[0] and str(tmp_path) in message[0]
    # the orchestration contract: even a failure ends with exactly one JSON line on stdout
    [line] = result.stdout.splitlines()
    failure = json.loads(line)
    assert failure["status"] == "failed" and failure["exit_code"] == 2 and "lineup setup" in failure["error"]


def test_bad_config_key_exits_2() -> None:
    result = run_lineup("doctor", "--set", "spark.mastr=local[1]")
    assert result.returncode == 2
    assert "spark.mastr" in result.stderr and "Traceback" not in result.stderr


def test_submit_args_lists_staged_jars_and_delta_conf() -> None:
    result = run_lineup("submit-args")
    assert result.returncode == 0, result.stderr
    args = result.stdout.split()
    assert args[0] == "--jars" and all(Path(p).is_file() for p in args[1].split(","))
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in args
    assert "spark.ui.showConsoleProgress=false" in args
    assert any(a.startswith("spark.databricks.delta.snapshotPartitions=") for a in args)


def test_cluster_submit_args_need_the_package_first(tmp_path: Path) -> None:
    result = run_lineup("submit-args", "--cluster", "--package-dir", str(tmp_path), "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["status"] == "failed"
    assert "run `lineup package --out" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_index_of_a_missing_table_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_lineup("index", "--set", f"index.faces_table={tmp_path / 'nope'}", "--set", "spark.master=local[1]")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "not a Delta faces table" in lines[-1] and "Traceback" not in result.stderr
