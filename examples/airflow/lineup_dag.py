"""An Airflow DAG running Lineup's chain: embed -> index -> query -> audit.

Each task runs one `lineup` command and follows its contract: stdout is exactly one JSON line (the
summary, also on failure), logs go to stderr, and the exit status says what to do. Exit 2 (bad input or
configuration) fails the task at once without retries (`AirflowFailException`); exit 3 (a transient
failure: a lost executor, a storage timeout, commit conflicts) fails it so that `retries` apply; 1 is a
bug. The summary is the task's return value, so it is the XCom the next task reads: the index pins the
faces-table version embed wrote, the query names the index, the audit names the query's run_id.

To run on a cluster, put `spark-submit ... $(lineup submit-args --cluster)` in `LINEUP_COMMAND` instead
of the `lineup` executable; nothing else changes (the JSON line and exit codes are the same under
spark-submit).

Settings come from the environment of the Airflow worker (or edit the defaults below):
LINEUP_COMMAND (default `lineup`), LINEUP_IMAGES (folder of gallery images, e.g. deepface-pairs),
LINEUP_WORK (where tables and the index go), LINEUP_MASTER (default local[2]).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from datetime import datetime

from airflow.exceptions import AirflowException, AirflowFailException
from airflow.sdk import dag, task

EXIT_BAD_INPUT, EXIT_TRANSIENT = 2, 3


def lineup(job: str, *settings: str) -> dict:
    """Run `lineup <job> --set <setting> ...` (plus the shared master and data root); its JSON summary,
    or the Airflow failure its exit status calls for."""
    settings += (f"spark.master={os.environ.get('LINEUP_MASTER', 'local[2]')}", f"spark.data_root={work('data')}")
    command = [*shlex.split(os.environ.get("LINEUP_COMMAND", "lineup")), job]
    command += [arg for setting in settings for arg in ("--set", setting)]
    done = subprocess.run(command, capture_output=True, text=True)
    sys.stderr.write(done.stderr)  # Lineup's logs and progress, into the task log
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {"status": "failed", "error": "no JSON line on stdout"}
    if done.returncode == EXIT_BAD_INPUT:
        raise AirflowFailException(f"bad input, not retried: {summary.get('error')}")
    if done.returncode == EXIT_TRANSIENT:
        raise AirflowException(f"transient failure, will retry: {summary.get('error')}")
    if done.returncode != 0:
        raise AirflowException(f"lineup failed (exit {done.returncode}): {summary.get('error')}")
    return summary


def work(*parts: str) -> str:
    return os.path.join(os.environ.get("LINEUP_WORK", "/tmp/lineup-airflow"), *parts)


@dag(
    dag_id="lineup_chain",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 2},
    tags=["lineup"],
)
def lineup_chain():
    @task
    def embed() -> dict:
        return lineup(
            "embed",
            f"embed.input.path={os.environ.get('LINEUP_IMAGES', '/data/images')}",
            f"embed.table_path={work('tables', 'faces')}",
        )

    @task
    def index(embedded: dict) -> dict:
        return lineup(
            "index",
            f"index.faces_table={embedded['outputs']['faces_table']}",
            f"index.faces_version={embedded['outputs']['faces_table_version']}",  # exactly what embed wrote
            f"index.index_dir={work('index')}",
        )

    @task
    def query(embedded: dict, indexed: dict) -> dict:
        return lineup(
            "query",
            f"query.probes.faces_table={embedded['outputs']['faces_table']}",
            f"query.probes.faces_version={embedded['outputs']['faces_table_version']}",
            f"query.index_dir={indexed['outputs']['index_dir']}",
            f"query.matches_table={work('tables', 'matches')}",
            f"query.identities_table={work('tables', 'identities')}",
        )

    @task
    def audit(searched: dict) -> dict:
        return lineup(
            "audit",
            f"audit.identification.matches_table={searched['outputs']['matches_table']}",
            f"audit.identification.run_id={searched['run_id']}",
        )

    embedded = embed()
    indexed = index(embedded)
    audit(query(embedded, indexed))


lineup_chain()
