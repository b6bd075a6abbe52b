"""The erasure register's rows as forget writes them: `registered` before anything is deleted, `completed` with
what was done and verified, `lifted` with its reason; digests only, never the ids or vectors."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from jobs.common.commits import append_with_retries, with_commit_retries
from jobs.common.delta import is_delta_table, latest_version
from jobs.common.erasures import ERASED, erased_reason, id_digest
from jobs.common.errors import UserError
from jobs.common.runs import RunRecord, current_user
from jobs.common.schema import ERASURES_ARROW
from jobs.common.spark import local_frame
from jobs.forget.config import ForgetConfig
from jobs.forget.plan import ErasedSet
from jobs.forget.verify import Findings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def drop_erased_markers(spark: SparkSession, config: ForgetConfig, erasure_ids: list[str]) -> int:
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


def erasures_frame(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    import pyarrow as pa

    return local_frame(spark, pa.Table.from_pylist(rows, schema=ERASURES_ARROW))


def register_erasure(
    spark: SparkSession, config: ForgetConfig, record: RunRecord, erasure_id: str, values: list[str], erased: ErasedSet
) -> None:
    """The erasure's first row (`phase` registered): digests of the subjects and image contents it
    erases, in force for every job that embeds from this commit on."""
    row = erasure_row(config, record, erasure_id, values, erased, [], [], Findings(), None, "registered")
    append_with_retries(erasures_frame(spark, [row]), config.erasures_table_path(), add_columns=True)
    log.info("forget: erasure %s registered in %s", erasure_id, config.erasures_table_path())


def lift_erasures(config: ForgetConfig, spark: SparkSession, record: RunRecord) -> dict[str, Any]:
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
    append_with_retries(erasures_frame(spark, rows), table, add_columns=True)
    markers = drop_erased_markers(spark, config, settings.lift)
    record.counts = {"erasures_lifted": len(rows), "erased_rows_removed": markers}
    record.add_output("erasures", table, latest_version(spark, table))
    return {
        "lifted": list(settings.lift),
        "erased_rows_removed": markers,
        "outputs": {"erasures_table": table},
    }


def erasure_row(
    config: ForgetConfig,
    record: RunRecord,
    erasure_id: str,
    values: list[str],
    erased: ErasedSet,
    tables: list[dict[str, Any]],
    indexes: list[dict[str, Any]],
    findings: Findings,
    verified: bool | None,
    phase: str,
) -> dict[str, Any]:
    settings = config.forget
    kind = settings.selector.kind if settings.selector else None
    return {
        "erasure_id": erasure_id,
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
