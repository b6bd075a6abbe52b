"""The example Airflow DAG, with Airflow installed from PyPI in its own venv (`make install`): it loads
in a DagBag without import errors, `airflow dags test` runs embed -> index -> query -> audit against local
Spark on the deepface set with each task handing its JSON summary to the next through XCom, and a bad
input (exit 2) fails its task at once, without the retries a transient failure gets."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.processes import CEILING_S

pytestmark = [pytest.mark.heavy, pytest.mark.data]

REPO_ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_VENV = REPO_ROOT / ".airflow-venv"
DAGS = REPO_ROOT / "examples" / "airflow"
DAGBAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dag_ids)}))
"""


@pytest.fixture()
def airflow_env(tmp_path: Path, shared_data: Path) -> dict[str, str]:
    if not (AIRFLOW_VENV / "bin" / "airflow").is_file():
        pytest.skip(f"Airflow is not installed at {AIRFLOW_VENV}: run `make install`")
    env = dict(
        os.environ,
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        LINEUP_COMMAND=str(REPO_ROOT / ".venv" / "bin" / "lineup"),
        LINEUP_IMAGES=str(shared_data / "deepface-pairs"),
        LINEUP_WORK=str(tmp_path / "work"),
    )
    migrated = airflow(env, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return env


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [str(AIRFLOW_VENV / "bin" / "airflow"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=CEILING_S * 4)


def test_the_dag_runs_the_chain_and_hands_summaries_on(airflow_env: dict[str, str], spark, tmp_path: Path) -> None:
    loaded = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "python"), "-c", DAGBAG, str(DAGS)],
        capture_output=True,
        text=True,
        env=airflow_env,
        timeout=CEILING_S,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == {"errors": {}, "dags": ["lineup_chain"]}

    run = airflow(airflow_env, "dags", "test", "lineup_chain")
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    runs = spark.read.format("delta").load(str(tmp_path / "work" / "data" / "tables" / "runs")).collect()
    by_job = {row.job: row for row in runs}
    assert sorted(by_job) == ["audit", "embed", "index", "query"] and all(r.status == "ok" for r in runs)
    faces_version = by_job["embed"].outputs[0].version
    assert [i.version for i in by_job["index"].inputs if i.name == "faces"] == [faces_version]  # through XCom
    assert json.loads(by_job["audit"].params)["identification"]["run_id"] == by_job["query"].run_id


def test_a_bad_input_fails_its_task_without_retries(airflow_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(airflow_env, LINEUP_IMAGES=str(tmp_path / "no_such_folder"))
    run = airflow(env, "dags", "test", "lineup_chain")
    output = run.stdout + run.stderr
    assert "bad input, not retried" in output and str(tmp_path / "no_such_folder") in output
    assert "try_number=2" not in output  # AirflowFailException: no second try
