"""The runs table: an append-only audit trail, one row per job run (who, when, with what, on which
table versions, what came out, and how it ended)."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from jobs.common.catalog import register_tables
from jobs.common.commits import append_with_retries
from jobs.common.config import location_settings
from jobs.common.delta import latest_version
from jobs.common.delta_files import append_batch, append_on_driver
from jobs.common.errors import (
    INDEX_CHANGED,
    TABLE_FILE_GONE,
    TransientError,
    UserError,
    executor_message,
    faulted_path,
    mentions,
    storage_fault,
)
from jobs.common.executors import check_packaged_executors
from jobs.common.results import JobResult
from jobs.common.schema import RUNS_ARROW, RUNS_DDL
from jobs.common.spark import get_spark, use_storage
from jobs.common.storage import check_locations, is_remote, redact
from jobs.common.timing import Phases

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

T = TypeVar("T")
R = TypeVar("R", bound=JobResult)

log = logging.getLogger(__name__)


def new_run_id(job: str) -> str:
    return f"{job}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


@dataclass
class RunRecord:
    """Filled in while a job runs; `append_run` writes it once, at the end (ok or failed)."""

    job: str
    params: dict[str, Any]
    run_id: str = ""
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    threshold: float | None = None
    threshold_source: str | None = None

    def __post_init__(self) -> None:
        self.run_id = self.run_id or new_run_id(self.job)

    def add_input(self, name: str, path: str, version: int | None) -> None:
        self.inputs.append({"name": name, "path": str(path), "version": None if version is None else int(version)})

    def add_output(self, name: str, path: str, version: int | None) -> None:
        self.outputs.append({"name": name, "path": str(path), "version": None if version is None else int(version)})


def delta_version(spark: SparkSession, path: str) -> int:
    return latest_version(spark, str(path))


def append_run(spark: SparkSession, runs_table: str, record: RunRecord, status: str, error: str | None = None) -> int:
    """Append the run's row (one Delta commit); returns the runs table's new version."""
    row = {
        "run_id": record.run_id,
        "job": record.job,
        "started_at": record.started_at,
        "finished_at": dt.datetime.now(dt.UTC),
        "user": current_user(),
        "host": socket.gethostname(),
        "params": json.dumps(record.params, sort_keys=True, default=str),
        "inputs": record.inputs,
        "outputs": record.outputs,
        "counts": {key: int(value) for key, value in record.counts.items()},
        "threshold": record.threshold,
        "threshold_source": record.threshold_source,
        "status": status,
        "error": error,
    }
    import pyarrow as pa

    # One row through Spark's writer costs a job and a version lookup (~0.5-1 s here); written here and
    # committed by delta-rs (a local table) or Delta's own transaction, ~0.1 s warm (the transaction's
    # first use in a fresh JVM: 2-3 s). The first run creates the table through Spark.
    batch = pa.RecordBatch.from_pylist([row], schema=RUNS_ARROW)
    version = append_on_driver(str(runs_table), batch)
    if version is None:
        version = append_batch(spark, str(runs_table), batch)
    if version is not None:
        return version
    append_with_retries(spark.createDataFrame([row], RUNS_DDL), str(runs_table), properties=RUNS_TABLE_PROPERTIES)
    return delta_version(spark, runs_table)


# Delta writes a checkpoint inside every 10th commit by default: for the runs table, one row a run, that
# stalled every tenth run's last step by 3-13 s on a 2-vCPU, 24 GiB VM (the checkpoint's code is
# cold in a fresh JVM). Every 100th run instead; reading the table then replays at most 100 one-row commits.
RUNS_TABLE_PROPERTIES = {"delta.checkpointInterval": "100"}


def record_failure(spark: SparkSession, runs_table: str, record: RunRecord, error: BaseException) -> None:
    """Best effort: a failed run still leaves its row; a failure to write it must not hide the first error."""
    try:
        reason = redact(f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:500]}")
        append_run(spark, runs_table, record, "failed", reason)
    except Exception:  # we are already handling the error that matters
        log.exception("could not record the failed run %s in %s", record.run_id, runs_table)


def run_job(
    job: str,
    config: Any,
    spark: Any,
    params: dict[str, Any],
    body: Callable[[Any, RunRecord, Phases], dict[str, Any]],
    result_type: type[R] = JobResult,  # type: ignore[assignment]  # the default is the base of R's bound
) -> R:
    """Every job's frame: the session (timed), the runs row (`ok` once the body returns, `failed` when it
    raises: `run_recorded`), the runs table and version in the summary's `outputs`, and the phase timings
    (`timings_s`). `body(spark, record, phases)` does the job's work, fills `record` and returns the
    summary; it never writes its own runs row. The summary becomes the job's typed result (whose
    `to_json()` is the CLI's JSON line)."""

    phases = Phases(job)
    started = time.perf_counter()
    use_storage(config.storage, config.spark.extra_conf)
    check_locations(location_settings(config))
    if spark is None:
        spark = get_spark(config.spark, app_name=f"lineup-{job}", storage=config.storage)
        check_packaged_executors(spark)
    phases.add("session_start", time.perf_counter() - started)

    def timed(record: RunRecord) -> R:
        summary = body(spark, record, phases)
        summary = {"job": job, "run_id": record.run_id, "status": "ok"} | summary
        # The body succeeded: its row says so (a body that raises gets `failed` in `run_recorded`).
        runs_table = config.runs_table_path()
        with phases.phase("record_run"):
            runs_version = append_run(spark, runs_table, record, "ok")
        summary.setdefault("outputs", {}).update(runs_table=runs_table, runs_version=runs_version)
        if config.catalog_database and record.outputs:
            tables = [o["path"] for o in record.outputs if o["version"] is not None] + [config.runs_table_path()]
            summary["catalog_tables"] = register_tables(spark, config.catalog_database, tables)
        summary["timings_s"] = phases.timings_s()
        return result_type.from_summary(summary)

    return run_recorded(spark, config.runs_table_path(), RunRecord(job, params=params), timed, config)


def run_recorded(
    spark: SparkSession, runs_table: str, record: RunRecord, body: Callable[[RunRecord], T], config: Any = None
) -> T:
    """Run a job's body; if it fails, its row still lands in the runs table (status failed) before
    re-raising. A storage fault or an index changed under a reader, raised on the driver or inside an
    executor's error, is re-raised as one `TransientError` sentence (exit 3)."""
    try:
        return body(record)
    except Exception as error:
        translated = infrastructure_error(error, config)
        record_failure(spark, runs_table, record, translated or error)
        raised = translated or error
        raised.run_id = record.run_id  # type: ignore[attr-defined]  # the CLI's failure line names the run
        if translated is not None:
            raise translated from None
        raise


def infrastructure_error(error: BaseException, config: Any = None) -> TransientError | None:
    """One sentence for a fault of the infrastructure hidden in `error`, or None when it is none."""
    if isinstance(error, TransientError | UserError):  # already said in one line, with its exit status
        return None
    changed = executor_message(error, INDEX_CHANGED)
    if changed:
        return TransientError(changed)
    if mentions(error, TABLE_FILE_GONE) and mentions(error, (".parquet",)):
        return TransientError(
            "a data file of a table this job read was removed meanwhile (an erasure's purge or a VACUUM of "
            "the version it pinned); rerun to read the current version"
        )
    fault = storage_fault(error)
    if fault is None:
        return None
    where = faulted_path(error) or full_location(config)
    return TransientError(
        f"storage fault ({fault}) writing {where or 'a configured location'}: free space or fix the storage, "
        "then rerun; what earlier commits wrote is kept and a rerun resumes"
    )


def full_location(config: Any) -> str | None:
    """The configured local location whose file system has the least room (under 1 MiB: full), if any."""

    if config is None:
        return None
    candidates: list[tuple[int, str]] = []
    for _, location in location_settings(config):
        if not isinstance(location, str) or is_remote(location):
            continue
        path = os.path.expanduser(location.removeprefix("file://"))
        while path and not os.path.exists(path):
            path = os.path.dirname(path)
        if path:
            stats = os.statvfs(path)
            candidates.append((stats.f_bavail * stats.f_frsize, location))
    full = sorted(c for c in candidates if c[0] < 2**20)
    return full[0][1] if full else None
