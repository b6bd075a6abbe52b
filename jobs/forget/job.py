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
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from jobs.common.commits import append_with_retries, with_commit_retries
from jobs.common.delta import is_delta_table, latest_version
from jobs.common.erasures import ERASED, erased_reason, id_digest
from jobs.common.errors import TransientError, UserError
from jobs.common.results import ForgetResult
from jobs.common.runs import RunRecord, current_user, run_job
from jobs.common.schema import ERASURES_ARROW
from jobs.common.spark import local_frame
from jobs.common.storage import AnyPath, upath
from jobs.common.timing import Phases
from jobs.forget.config import ForgetConfig
from jobs.forget.indexes import erase_from_index
from jobs.forget.plan import ErasedSet, find_rows, selector_condition, selector_values
from jobs.forget.verify import Findings, scan_index, scan_table

log = logging.getLogger(__name__)


class ErasureIncomplete(UserError):
    """Files still hold erased data after the run; the message names them and what to do."""


def run_forget(config: ForgetConfig, spark=None) -> ForgetResult:
    selector = config.forget.selector
    if selector is not None and not selector.from_table:
        selector_values(selector)  # a malformed selector is refused before a SparkSession is started
    params = config.forget.model_dump(mode="json")
    if config.forget.selector is not None:  # the runs table must not keep the person's ids either
        params["selector"]["values"] = [id_digest(v) for v in config.forget.selector.values]
    return run_job(
        "forget", config, spark, params, lambda spark, r, phases: _run(config, spark, r, phases), ForgetResult
    )


def _run(config: ForgetConfig, spark, record: RunRecord, phases: Phases) -> dict[str, Any]:
    settings = config.forget
    if settings.lift:
        return _lift(config, spark, record)
    erasure_id = f"erasure-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
    faces, probes = config.faces_table_paths(), config.resolved(settings.probe_tables)
    with phases.phase("plan"):
        values = selector_values(settings.selector, spark) if settings.selector else []
        pending = _pending_path(config, values)
        erased = ErasedSet.from_json(pending.read_text()) if pending.is_file() else ErasedSet()
        if settings.selector:
            erased.update(find_rows(spark, faces + probes, settings.selector, values))
    if settings.selector:
        # In force from here on, before anything is deleted: an embed committing from now on leaves the
        # person out (it reads the register before and after each commit), so the delete below converges.
        _register(spark, config, record, erasure_id, values, erased)
    if settings.selector and not erased.face_ids and settings.older_than is None:
        if not _anything_names(spark, config, erased):
            log.info("forget: the selector matches nothing in the configured tables; the erasure is registered")
            record.add_output("erasures", config.erasures_table_path(), None)
            return {
                "job": "forget",
                "run_id": record.run_id,
                "erasure_id": erasure_id,
                "status": "ok",
                "matched": 0,
                "changed": False,
                "registered": True,
            }
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.write_text(erased.to_json())  # a crashed run resumes with the same set; removed at the end
    with phases.phase("delete_rows"):
        tables = _delete_converged(spark, config, erased, values)
    with phases.phase("rewrite_indexes"):
        versions = {t["path"]: (t["version_before"], t["version_after"]) for t in tables if t["role"] == "faces"}
        indexes = [
            erase_from_index(upath(d), erased.face_ids, erasure_id, versions)
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
    incomplete = findings.current + findings.shards + (findings.history if settings.purge_history else [])
    row = _erasure_row(
        config, record, erasure_id, values, erased, tables, indexes, findings, not incomplete, "completed"
    )
    append_with_retries(_erasures_frame(spark, [row]), config.erasures_table_path(), add_columns=True)
    record.counts = {
        "faces_erased": len(erased.face_ids),
        **{f"rows_deleted_{t['role']}": t["rows_deleted"] for t in tables},
    }
    record.counts["vectors_removed"] = sum(i["vectors_removed"] for i in indexes)
    record.add_output("erasures", config.erasures_table_path(), latest_version(spark, config.erasures_table_path()))
    if incomplete:
        raise ErasureIncomplete(
            f"erasure {erasure_id}: {len(incomplete)} file(s) still hold erased data, e.g. {incomplete[:3]}"
            + ("" if settings.purge_history else "; set forget.purge_history=true with forget.retention_hours")
        )
    pending.unlink(missing_ok=True)
    return {
        "job": "forget",
        "run_id": record.run_id,
        "erasure_id": erasure_id,
        "status": "ok",
        "matched": len(erased.face_ids),
        "changed": True,
        "tables": tables,
        "indexes": indexes,
        "purged_history": settings.purge_history,
        "verification": findings.as_dict() if settings.verify else None,
        "outputs": {"erasures_table": config.erasures_table_path()},
    }


def _drop_erased_markers(spark, config: ForgetConfig, erasure_ids: list[str]) -> int:
    """Delete the `erased` rows the lifted erasures wrote, so the next embed embeds those images again
    (an `erased` row counts as a known image, which a rerun skips)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    reasons = [erased_reason(erasure_id) for erasure_id in erasure_ids]
    condition = (F.col("status") == F.lit(ERASED)) & F.col("error").isin(reasons)
    removed = 0
    for table in config.faces_table_paths() + config.resolved(config.forget.probe_tables):
        if is_delta_table(spark, table):
            count = spark.read.format("delta").load(table).where(condition).count()
            if count:

                def delete(table: str = table) -> None:
                    DeltaTable.forPath(spark, table).delete(condition)

                with_commit_retries(delete, table)
                removed += count
    return removed


def _erasures_frame(spark, rows: list[dict[str, Any]]):
    import pyarrow as pa

    return local_frame(spark, pa.Table.from_pylist(rows, schema=ERASURES_ARROW))


def _register(spark, config: ForgetConfig, record: RunRecord, erasure_id: str, values, erased: ErasedSet) -> None:
    """The erasure's first row (`phase` registered): digests of the subjects and image contents it
    erases, in force for every job that embeds from this commit on."""
    row = _erasure_row(config, record, erasure_id, values, erased, [], [], Findings(), None, "registered")
    append_with_retries(_erasures_frame(spark, [row]), config.erasures_table_path(), add_columns=True)
    log.info("forget: erasure %s registered in %s", erasure_id, config.erasures_table_path())


def _lift(config: ForgetConfig, spark, record: RunRecord) -> dict[str, Any]:
    """Lift erasures (new consent): a recorded act, one `lifted` row per erasure id, never a side effect."""
    settings = config.forget
    table = config.erasures_table_path()
    known = set()
    if is_delta_table(spark, table):
        known = {r.erasure_id for r in spark.read.format("delta").load(table).select("erasure_id").distinct().collect()}
    unknown = [e for e in settings.lift if e not in known]
    if unknown:
        raise UserError(
            f"forget.lift: {unknown[:3]} are not erasure ids in {table}; give ids from its erasure_id column"
        )
    now = dt.datetime.now(dt.UTC)
    rows = [
        {"erasure_id": f"lift-{uuid.uuid4().hex[:12]}", "run_id": record.run_id, "erased_at": now,
         "user": current_user(), "phase": "lifted", "lifts": erasure_id, "reason": settings.lift_reason}
        for erasure_id in settings.lift
    ]  # fmt: skip
    append_with_retries(_erasures_frame(spark, rows), table, add_columns=True)
    markers = _drop_erased_markers(spark, config, settings.lift)
    record.counts = {"erasures_lifted": len(rows), "erased_rows_removed": markers}
    record.add_output("erasures", table, latest_version(spark, table))
    return {
        "job": "forget",
        "run_id": record.run_id,
        "status": "ok",
        "lifted": list(settings.lift),
        "erased_rows_removed": markers,
        "outputs": {"erasures_table": table},
    }


def _pending_path(config: ForgetConfig, values: list[str]) -> AnyPath:
    key = id_digest(json.dumps([config.forget.selector.kind if config.forget.selector else "", values]))
    return config.locations.data_root() / "erasures" / f"pending-{key[:24]}.json"


def _roles(config: ForgetConfig) -> list[tuple[str, str]]:
    settings = config.forget
    roles = [("faces", t) for t in config.faces_table_paths()] + [
        ("probe_faces", t) for t in config.resolved(settings.probe_tables)
    ]
    roles += [("matches", t) for t in config.resolved(settings.matches_tables)]
    roles += [("identities", t) for t in config.resolved(settings.identities_tables)]
    return roles + [("pair_scores", t) for t in config.resolved(settings.pair_scores_tables)]


def _condition(role: str, erased: ErasedSet, by_subject: bool, cutoff: dt.datetime | None, selected: Any = None):
    """Which rows of a table of this role hold the person's data (or are past retention). `selected`
    (faces-table layout) is the selector itself, so rows committed after planning are matched too."""
    from pyspark.sql import functions as F

    faces, images, subjects = sorted(erased.face_ids), sorted(erased.image_ids), sorted(erased.subject_ids)
    never = F.lit(False)
    if role in ("faces", "probe_faces"):
        condition = F.col("face_id").isin(faces) | F.col("image_id").isin(images) if faces or images else never
        if selected is not None:
            condition = condition | selected
        # `erased` rows hold nothing of the person: they are what keeps the content from coming back
        condition = condition & (F.col("status") != F.lit(ERASED))
        time_column = "embedded_at" if role == "probe_faces" else None
    elif role in ("matches", "identities"):
        face_column = "gallery_face_id" if role == "matches" else "best_gallery_face_id"
        condition = (
            F.col("probe_face_id").isin(faces) | F.col(face_column).isin(faces) | F.col("probe_image_id").isin(images)
        )
        if by_subject and subjects:
            # By digest: Delta records a DELETE's condition in its log, which an erasure cannot purge.
            digests = sorted(id_digest(subject) for subject in subjects)
            condition = (
                condition
                | F.sha2(F.col("probe_subject_id"), 256).isin(digests)
                | F.sha2(F.col("gallery_subject_id"), 256).isin(digests)
            )
        time_column = "queried_at"
    else:
        condition = F.col("a_face_id").isin(faces) | F.col("b_face_id").isin(faces)
        time_column = None
    if cutoff is not None and time_column is not None:
        condition = condition | (F.col(time_column) < F.lit(cutoff))
    return condition


MAX_ROUNDS = 5  # deletes of rows committed beside the erasure before it gives up (exit 3: rerun it)


def _delete_converged(spark, config: ForgetConfig, erased: ErasedSet, values: list[str]) -> list[dict[str, Any]]:
    """Delete the person's rows everywhere, then look again by the selector: rows a concurrent embed
    committed meanwhile are found and deleted in the next round, until a round finds none."""
    selector = config.forget.selector
    selected = selector_condition(selector, values) if selector else None
    tables: list[dict[str, Any]] = []
    for round_number in range(MAX_ROUNDS):
        done = _delete_everywhere(spark, config, erased, selected)
        tables = done if not tables else _merged_rounds(tables, done)
        if selector is None:
            return tables
        tables_with_faces = config.faces_table_paths() + config.resolved(config.forget.probe_tables)
        late = find_rows(spark, tables_with_faces, selector, values)
        if not late.face_ids:
            return tables
        log.info("forget: round %d: %d row(s) committed beside the erasure, deleting them", round_number + 1, len(late))
        erased.update(late)
    raise TransientError(
        f"forget: rows of the erased selector kept being committed through {MAX_ROUNDS} rounds of deletes "
        "(an embed without the erasure register running beside it?); rerun lineup forget"
    )


def _merged_rounds(first: list[dict[str, Any]], later: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per table: the first round's version before, the last round's version after, rows summed."""
    later_of = {(t["role"], t["path"]): t for t in later}
    merged = []
    for entry in first:
        last = later_of.pop((entry["role"], entry["path"]), None)
        rows = entry["rows_deleted"] + (last["rows_deleted"] if last else 0)
        merged.append({**entry, "version_after": (last or entry)["version_after"], "rows_deleted": rows})
    return merged + list(later_of.values())


def _delete_everywhere(spark, config: ForgetConfig, erased: ErasedSet, selected=None) -> list[dict[str, Any]]:
    from delta.tables import DeltaTable

    hours = config.older_than_hours()
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours) if hours is not None else None
    by_subject = config.forget.selector is not None and config.forget.selector.kind == "subject_ids"
    done = []
    for role, table in _roles(config):
        if not is_delta_table(spark, table):
            continue
        condition = _condition(role, erased, by_subject, cutoff, selected)
        before = latest_version(spark, table)
        matching = spark.read.format("delta").load(table).where(condition).count()
        if matching:  # a DELETE that matches nothing would still add a version

            def delete(table: str = table, condition=condition) -> None:
                DeltaTable.forPath(spark, table).delete(condition)

            with_commit_retries(delete, table)
        after = latest_version(spark, table)
        log.info("forget: %s %s: %d row(s) deleted (v%d -> v%d)", role, table, matching, before, after)
        done.append(
            {"role": role, "path": table, "version_before": before, "version_after": after, "rows_deleted": matching}
        )
    return done


def _anything_names(spark, config: ForgetConfig, erased: ErasedSet) -> bool:
    """Whether any derived table still names the selected subjects (a rerun after the faces were deleted)."""
    by_subject = config.forget.selector is not None and config.forget.selector.kind == "subject_ids"
    for role, table in _roles(config):
        if role in ("matches", "identities") and by_subject and is_delta_table(spark, table):
            if spark.read.format("delta").load(table).where(_condition(role, erased, True, None)).limit(1).count():
                return True
    return False


IN_FLIGHT_S = 600.0  # an untracked data file younger than this may be a concurrent writer's, not yet committed


def _settle(spark, config: ForgetConfig, erased: ErasedSet, values: list[str], tables, findings: Findings):
    """Converge with writers running beside the erasure. Rows of the person committed since the delete
    are deleted again; with the purge, data files no commit names that hold erased data are deleted
    when older than `IN_FLIGHT_S` (a killed run's), and awaited while younger (an embed in flight
    rewrites or drops its files at its next commit, once it has read the register). Exit 3 when that
    does not settle."""
    deadline = time.monotonic() + IN_FLIGHT_S
    purging = config.forget.purge_history
    while True:
        if findings.current:
            tables = _merged_rounds(tables, _delete_converged(spark, config, erased, values))
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


def _purge(spark, tables: list[str], retention_hours: float) -> None:
    """VACUUM each table: data files no version newer than `retention_hours` reads are deleted."""
    from delta.tables import DeltaTable

    if retention_hours < 168:  # Delta refuses short retentions unless told the operator means it
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    # VACUUM lists a table's folders with one task per `parallelPartitionDiscovery.parallelism` slot
    # (10,000 by default): minutes of empty tasks on a small cluster; the shuffle width is plenty.
    listing = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
    previous = spark.conf.get(listing, None)
    spark.conf.set(listing, spark.conf.get("spark.sql.shuffle.partitions"))
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


def _verify(spark, config: ForgetConfig, erased: ErasedSet, tables: list[dict[str, Any]], values) -> Findings:
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


def _erasure_row(
    config, record, erasure_id, values, erased, tables, indexes, findings, verified, phase: str
) -> dict[str, Any]:
    settings = config.forget
    kind = settings.selector.kind if settings.selector else None
    return {
        "erasure_id": erasure_id,
        "run_id": record.run_id,
        "erased_at": dt.datetime.now(dt.UTC),
        "user": current_user(),
        "phase": phase,
        # A face_ids erasure erases those faces, not the photos they are in (a group photo's others stay).
        "image_sha256": []
        if kind in ("face_ids", None)
        else sorted(
            {id_digest(i) for i in erased.image_ids}
            | ({id_digest(v) for v in values} if kind == "image_ids" else set())
        ),
        "subject_sha256": sorted({id_digest(v) for v in values} if kind == "subject_ids" else set()),
        "selector_kind": settings.selector.kind if settings.selector else None,
        "selector_sha256": [id_digest(v) for v in values],
        "model_id": settings.selector.model_id if settings.selector else None,
        "older_than": settings.older_than,
        "tables": tables,
        "indexes": [{"path": i["index_dir"], "vectors_removed": i["vectors_removed"]} for i in indexes],
        "purged_history": settings.purge_history,
        "retention_hours": settings.retention_hours,
        "verified": verified if settings.verify and phase == "completed" else None,
        "findings": json.dumps(findings.as_dict()),
        "face_id_sha256": sorted(id_digest(i) for i in erased.face_ids),
        "embedding_sha256": sorted(erased.embedding_digests),
    }
