"""The audit job: how often Lineup is wrong, on stated data, overall and per demographic group.

config -> load (`load.py`: labelled faces at a pinned version; a query run's matches) -> measure
(`one_to_one.py`: FMR/FNMR/DET/EER, operating points, per-group rates at one global threshold;
`one_to_n.py`: rank hit rates, FNIR at FPIR, per-group FPIR, scenario replay) -> write (metrics table,
HTML report, runs row). `calibrate.py` writes a calibration record instead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from jobs.audit.calibrate import run_calibrate
from jobs.audit.config import AuditConfig
from jobs.audit.load import load_labelled, load_searches
from jobs.audit.metric_rows import metric_rows
from jobs.audit.normalized import normalized_view, normalizing_threshold, raw_threshold
from jobs.audit.one_to_n import identification, scenario_thresholds
from jobs.audit.one_to_one import global_threshold, make_pairs, verification
from jobs.audit.report import write_report
from jobs.common.commits import append_with_retries
from jobs.common.errors import UserError
from jobs.common.results import AuditResult
from jobs.common.runs import RunRecord, delta_version, run_job
from jobs.common.schema import AUDIT_METRICS_DDL
from jobs.common.timing import Phases

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

__all__ = ["run_audit", "run_calibrate"]


def run_audit(config: AuditConfig, spark: SparkSession | None = None) -> AuditResult:
    params = config.audit.model_dump(mode="json")
    return run_job(
        "audit", config, spark, params, lambda spark, r, phases: _timed(config, spark, r, phases), AuditResult
    )


def _timed(config: AuditConfig, spark: SparkSession, record: RunRecord, phases: Phases) -> dict[str, Any]:
    with phases.phase("measure_and_write"):
        return _run(config, spark, record)


def _run(config: AuditConfig, spark: SparkSession, record: RunRecord) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    one_to_one = one_to_n = normalized_one = None
    model_id = None
    points = None
    if config.audit.labelled.faces_table:
        labelled = load_labelled(spark, config)
        model_id = labelled.model_id
        record.add_input("labelled_faces", labelled.table, labelled.version)
        pairs, scores = make_pairs(labelled, config)
        threshold = global_threshold(config, model_id, scores[~pairs.genuine])
        one_to_one = verification(labelled, pairs, scores, config, raw_threshold(threshold))
        about = {"data": labelled.name, "data_table": labelled.table, "data_version": labelled.version}
        one_to_one.summary.update(about)
        points = one_to_one.summary["operating_points"]
        normalizing = normalizing_threshold(config, model_id)
        if normalizing is not None:
            normalized, at = normalized_view(config, normalizing, threshold, labelled.vectors, pairs, scores)
            normalized_one = verification(labelled, pairs, normalized, config, at)
            normalized_one.summary.update(about, normalization=at.normalization_label)
        record.threshold, record.threshold_source = threshold.value, threshold.source
    if config.audit.identification.matches_table:
        searches, info = load_searches(spark, config)
        if model_id is not None and info["model_id"] != model_id:
            raise UserError(f"the matches come from model {info['model_id']}, the labelled faces from {model_id}")
        model_id = info["model_id"]
        record.add_input("matches", info["matches_table"], delta_version(spark, info["matches_table"]))
        one_to_n = identification(searches, info, config, scenario_thresholds(config, model_id, points))
    metrics_table = config.metrics_table_path()
    rows = metric_rows(
        record.run_id,
        model_id,
        one_to_one.summary if one_to_one else None,
        one_to_n,
        normalized_one.summary if normalized_one else None,
    )
    append_with_retries(spark.createDataFrame(rows, AUDIT_METRICS_DDL), metrics_table)
    record.add_output("audit_metrics", metrics_table, delta_version(spark, metrics_table))
    report_path = config.report_path() / f"{record.run_id}.html"
    report = write_report(report_path, record.run_id, model_id, one_to_one, one_to_n, normalized_one)
    record.counts = {"metric_rows": len(rows)}
    if one_to_one:
        record.counts.update(one_to_one.summary["pairs"])
        summary["one_to_one"] = one_to_one.summary
    if normalized_one:
        summary["one_to_one_normalized"] = normalized_one.summary
    if one_to_n:
        record.counts["searches"] = one_to_n["searches"]
        summary["one_to_n"] = one_to_n
    summary["model_id"] = model_id
    summary["outputs"] = {
        "metrics_table": metrics_table,
        "metrics_version": record.outputs[-1]["version"],
        "report": str(report),
    }
    return summary
