"""The forget job: erase a person's biometric data from every table and index, record it, prove it.

plan (driver: the selector's rows in the faces and probe tables -> face ids, image ids, embedding
digests; kept in a pending file so a crashed run resumes with the same set) -> delete (one Delta DELETE
per table, commit conflicts retried) -> rewrite index shards without the vectors (`indexes.py`) ->
purge history (VACUUM at the stated retention) -> verify (`verify.py`: raw files and shards) -> record
(the erasures table keeps sha256 digests only, never the ids or vectors) and the runs row.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from jobs.common.commits import append_with_retries
from jobs.common.delta import is_delta_table, latest_version
from jobs.common.erasures import ERASED, id_digest
from jobs.common.errors import TransientError, UserError
from jobs.common.results import ForgetResult
from jobs.common.runs import RunRecord, run_job
from jobs.common.storage import AnyPath, upath
from jobs.common.timing import Phases
from jobs.forget.config import ForgetConfig
from jobs.forget.delete import anything_names, delete_converged, merged_rounds
from jobs.forget.indexes import erase_from_index
from jobs.forget.plan import ErasedSet, find_rows, selector_condition, selector_values
from jobs.forget.register import erasure_row, erasures_frame, lift_erasures, register_erasure
from jobs.forget.verify import Findings, scan_index, scan_table
from jobs.shards.templates import add_templates

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from jobs.shards.manifest import Manifest

log = logging.getLogger(__name__)


class ErasureIncomplete(UserError):
    """Files still hold erased data after the run; the message names them and what to do."""


def _rebuild_templates(spark: SparkSession, index_dir: AnyPath, manifest: Manifest, generation: int) -> None:
    """An index's identity templates computed again from the faces left after the erasure."""
    add_templates(spark, manifest, index_dir, generation)


def run_forget(config: ForgetConfig, spark: SparkSession | None = None) -> ForgetResult:
    selector = config.forget.selector
    if selector is not None and not selector.from_table:
        selector_values(selector)  # a malformed selector is refused before a SparkSession is started
    params = config.forget.model_dump(mode="json")
    if config.forget.selector is not None:  # the runs table must not keep the person's ids either
        params["selector"]["values"] = [id_digest(v) for v in config.forget.selector.values]
    return run_job(
        "forget", config, spark, params, lambda spark, r, phases: _run(config, spark, r, phases), ForgetResult
    )


def _run(config: ForgetConfig, spark: SparkSession, record: RunRecord, phases: Phases) -> dict[str, Any]:
    settings = config.forget
    if settings.lift:
        return lift_erasures(config, spark, record)
    erasure_id = f"erasure-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
    with phases.phase("plan"):
        values = selector_values(settings.selector, spark) if settings.selector else []
        pending = _pending_path(config, values)
        erased = ErasedSet.from_json(pending.read_text()) if pending.is_file() else ErasedSet()
        if settings.selector:
            faces, probes = config.faces_table_paths(), config.resolved(settings.probe_tables)
            erased.update(find_rows(spark, faces + probes, settings.selector, values))
    if settings.selector:
        # In force from here on, before anything is deleted: an embed committing from now on leaves the
        # person out (it reads the register before and after each commit), so the delete below converges.
        register_erasure(spark, config, record, erasure_id, values, erased)
        if not erased.face_ids and settings.older_than is None and not anything_names(spark, config, erased):
            log.info("forget: the selector matches nothing in the configured tables; the erasure is registered")
            record.add_output("erasures", config.erasures_table_path(), None)
            return {"erasure_id": erasure_id, "matched": 0, "changed": False, "registered": True}
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.write_text(erased.to_json())  # a crashed run resumes with the same set; removed at the end
    tables, indexes, findings = _erase(spark, config, erased, values, erasure_id, phases)
    incomplete = findings.current + findings.shards + (findings.history if settings.purge_history else [])
    row = erasure_row(
        config, record, erasure_id, values, erased, tables, indexes, findings, not incomplete, "completed"
    )
    append_with_retries(erasures_frame(spark, [row]), config.erasures_table_path(), add_columns=True)
    record.counts = {
        "faces_erased": len(erased.face_ids),
        **{f"rows_deleted_{t['role']}": t["rows_deleted"] for t in tables},
        "vectors_removed": sum(i["vectors_removed"] for i in indexes),
    }
    record.add_output("erasures", config.erasures_table_path(), latest_version(spark, config.erasures_table_path()))
    if incomplete:
        raise ErasureIncomplete(
            f"erasure {erasure_id}: {len(incomplete)} file(s) still hold erased data, e.g. {incomplete[:3]}"
            + ("" if settings.purge_history else "; set forget.purge_history=true with forget.retention_hours")
        )
    pending.unlink(missing_ok=True)
    return {
        "erasure_id": erasure_id,
        "matched": len(erased.face_ids),
        "changed": True,
        "tables": tables,
        "indexes": indexes,
        "purged_history": settings.purge_history,
        "verification": findings.as_dict() if settings.verify else None,
        "outputs": {"erasures_table": config.erasures_table_path()},
    }


def _erase(
    spark: SparkSession, config: ForgetConfig, erased: ErasedSet, values: list[str], erasure_id: str, phases: Phases
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Findings]:
    """Delete the rows, rewrite the indexes, purge history if asked, verify: per-table and per-index
    accounts, and what the verification found."""
    settings = config.forget
    with phases.phase("delete_rows"):
        tables = delete_converged(spark, config, erased, values)
    with phases.phase("rewrite_indexes"):
        versions = {t["path"]: (t["version_before"], t["version_after"]) for t in tables if t["role"] == "faces"}
        indexes = [
            erase_from_index(
                upath(d),
                erased.face_ids,
                erasure_id,
                versions,
                partial(_rebuild_templates, spark, upath(d)),
            )
            for d in config.resolved(settings.index_dirs)
        ]
    if settings.purge_history:
        with phases.phase("purge_history"):
            _purge(spark, [t["path"] for t in tables], float(settings.retention_hours or 0))
    findings = Findings()
    if settings.verify:
        with phases.phase("verify"):
            findings = _verify(spark, config, erased, tables, values)
            if findings.current or (settings.purge_history and findings.history):
                findings, tables = _settle(spark, config, erased, values, tables, findings)
    return tables, indexes, findings


def _pending_path(config: ForgetConfig, values: list[str]) -> AnyPath:
    key = id_digest(json.dumps([config.forget.selector.kind if config.forget.selector else "", values]))
    return config.locations.data_root() / "erasures" / f"pending-{key[:24]}.json"


IN_FLIGHT_S = 600.0  # an untracked data file younger than this may be a concurrent writer's, not yet committed


def _settle(
    spark: SparkSession,
    config: ForgetConfig,
    erased: ErasedSet,
    values: list[str],
    tables: list[dict[str, Any]],
    findings: Findings,
) -> tuple[Findings, list[dict[str, Any]]]:
    """Converge with writers running beside the erasure. Rows of the person committed since the delete
    are deleted again; with the purge, data files no commit names that hold erased data are deleted
    when older than `IN_FLIGHT_S` (a killed run's), and awaited while younger (an embed in flight
    rewrites or drops its files at its next commit, once it has read the register). Exit 3 when that
    does not settle."""
    deadline = time.monotonic() + IN_FLIGHT_S
    purging = config.forget.purge_history
    while True:
        if findings.current:
            tables = merged_rounds(tables, delete_converged(spark, config, erased, values))
            if purging:
                _purge(spark, [t["path"] for t in tables], float(config.forget.retention_hours or 0))
        young = []
        for name in findings.history if purging else []:
            try:
                age_s: float | None = time.time() - Path(name).stat().st_mtime
            except FileNotFoundError:  # its writer dropped or rewrote it meanwhile
                age_s = None
            path = Path(name)
            if age_s is not None and age_s >= IN_FLIGHT_S:
                log.info("forget: deleting %s: no commit names it and it holds erased data", path)
                path.unlink(missing_ok=True)
            elif age_s is not None:
                young.append(name)
        findings = _verify(spark, config, erased, tables, values)
        if not (findings.current or (purging and findings.history)):
            return findings, tables
        if time.monotonic() > deadline:
            raise TransientError(
                f"forget: {len(findings.current + findings.history)} data file(s) written beside the erasure "
                f"still hold erased data after {IN_FLIGHT_S:.0f} s (e.g. {(findings.current + findings.history)[0]}); "
                "rerun lineup forget once the writers beside it have ended"
            )
        if young and not findings.current:
            log.info("forget: waiting for %d data file(s) in flight that hold erased data", len(young))
            time.sleep(1.0)  # a poll for another process's commit, bounded by the deadline above


def _purge(spark: SparkSession, tables: list[str], retention_hours: float) -> None:
    """VACUUM each table: data files no version newer than `retention_hours` reads are deleted."""
    from delta.tables import DeltaTable

    if retention_hours < 168:  # Delta refuses short retentions unless told the operator means it
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    # VACUUM lists a table's folders with one task per `parallelPartitionDiscovery.parallelism` slot
    # (10,000 by default): minutes of empty tasks on a small cluster; the shuffle width is plenty.
    listing = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
    previous = spark.conf.get(listing, None)
    spark.conf.set(listing, str(spark.conf.get("spark.sql.shuffle.partitions")))
    try:
        for table in tables:
            # LITE: only files the log removed (the erased rows' old files), never files no commit names
            # yet: a concurrent embed's files in flight would be deleted under it (what remains of the
            # person in untracked files is `_settle_untracked`'s).
            try:
                spark.sql(f"VACUUM delta.`{table}` LITE RETAIN {retention_hours} HOURS")
            except Exception as error:  # LITE needs the log since the last VACUUM
                if "LITE" not in str(error).upper():
                    raise
                log.info("forget: %s: VACUUM LITE refused (%s), full VACUUM", table, str(error).splitlines()[0])
                DeltaTable.forPath(spark, table).vacuum(retention_hours)
            log.info("forget: vacuumed %s at %.1f h retention", table, retention_hours)
    finally:
        if previous is None:
            spark.conf.unset(listing)
        else:
            spark.conf.set(listing, previous)


def _verify(
    spark: SparkSession, config: ForgetConfig, erased: ErasedSet, tables: list[dict[str, Any]], values: list[str]
) -> Findings:
    """Raw files and shards scanned for every erased id and vector, and the tables asked for the
    selector itself: any row of that subject (or content, path, id) still there is a finding."""
    from delta.tables import DeltaTable

    findings = Findings()
    selector = config.forget.selector
    if selector is not None:
        for faces_table in config.faces_table_paths() + config.resolved(config.forget.probe_tables):
            if is_delta_table(spark, faces_table):
                rows = spark.read.format("delta").load(faces_table).where(selector_condition(selector, values))
                if rows.where(f"status != '{ERASED}'").limit(1).count():
                    findings.current.append(f"{faces_table} (rows matching the selector)")
    id_digests = {id_digest(i) for i in erased.face_ids}
    for table in tables:
        current = {_local(uri) for uri in DeltaTable.forPath(spark, table["path"]).toDF().inputFiles()}
        scan_table(Path(table["path"]), current, id_digests, erased.embedding_digests, findings)
    for index_dir in config.resolved(config.forget.index_dirs):
        scan_index(Path(index_dir), id_digests, erased.embedding_digests, findings)
    return findings


def _local(uri: str) -> str:
    """A data file URI as Spark lists it (`file:/...` or `file:///...`) -> the resolved local path."""
    return str(Path(unquote(urlparse(uri).path)).resolve())
