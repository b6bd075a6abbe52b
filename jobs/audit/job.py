"""The audit job: how often Lineup is wrong, on stated data, overall and per demographic group.

config -> load (driver: labelled faces at a pinned version; a query run's matches) -> measure (numpy:
1:1 genuine/impostor scores, FMR/FNMR/DET/EER, operating points with bootstrap intervals, per-group
rates at one global threshold; 1:N rank hit rates, FNIR at FPIR, per-group FPIR, scenario replay)
-> write (metrics table, HTML report, runs row; `calibrate` writes a calibration record instead).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.audit import identification as ident
from jobs.audit.config import AuditConfig
from jobs.audit.metrics import (
    bootstrap_rates,
    det_curve,
    equal_error_rate,
    fmr_fnmr,
    operating_point,
    ratio_max_min,
)
from jobs.audit.pairs import PairSet, build_pairs, pair_scores, subject_codes
from jobs.common.commits import append_with_retries
from jobs.common.delta import pinned_version, read_latest_if_any, read_pinned
from jobs.common.errors import UserError
from jobs.common.runs import RunRecord, append_run, delta_version, run_job
from jobs.common.thresholds import Threshold, load_calibration, resolve_threshold, write_calibration
from jobs.common.timing import Phases

log = logging.getLogger(__name__)

METRICS_DDL = (
    "run_id STRING, scope STRING, metric STRING, value DOUBLE, threshold DOUBLE, target DOUBLE, "
    "group_name STRING, ci_low DOUBLE, ci_high DOUBLE, n BIGINT, data STRING, data_version BIGINT, "
    "model_id STRING, created_at TIMESTAMP"
)
CALIBRATIONS_DDL = (
    "calibration_id STRING, threshold DOUBLE, target_fmr DOUBLE, measured_fmr DOUBLE, measured_fnmr DOUBLE, "
    "model_id STRING, data_name STRING, data_table STRING, data_version BIGINT, genuine_pairs BIGINT, "
    "impostor_pairs BIGINT, resolvable BOOLEAN, record STRING, created_at TIMESTAMP"
)


@dataclass
class Labelled:
    vectors: np.ndarray
    subjects: list[str | None]
    attributes: list[dict[str, str]]
    model_id: str
    table: str
    version: int
    name: str


def load_labelled(spark, config: AuditConfig) -> Labelled:
    """The labelled faces (status ok, one model) at a pinned version, on the driver as numpy."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    settings = config.audit.labelled
    table = config.locations.table(settings.faces_table, "faces")
    version = pinned_version(spark, table, settings.faces_version, "audit.labelled.faces_table")
    frame = spark.read.format("delta").option("versionAsOf", version).load(table).where(F.col("status") == "ok")
    if settings.where:
        try:
            frame = frame.where(settings.where)
            frame.schema  # noqa: B018 - a bad filter must fail here, with its name
        except Exception as error:  # noqa: BLE001
            raise UserError(f"audit.labelled.where {settings.where!r}: {str(error).splitlines()[0]}") from None
    models = sorted(r.model_id for r in frame.select("model_id").distinct().collect())
    if not models:
        raise UserError(f"audit.labelled.faces_table {table} v{version} has no faces (status ok) to audit")
    if settings.model_id is None and len(models) > 1:
        raise UserError(f"audit.labelled.faces_table {table} mixes models {models}: set audit.labelled.model_id")
    model_id = settings.model_id or models[0]
    frame = frame.where(F.col("model_id") == model_id)
    if settings.face_per_image != "all":
        # A group photo's bystanders are not the labelled person: keep one face per image, the most
        # confident one, or the one nearest the centre (LFW's convention: the photo is about that person).
        centre_distance = F.hypot(
            (F.col("bbox.x1") + F.col("bbox.x2")) / 2 - F.col("image_width") / 2,
            (F.col("bbox.y1") + F.col("bbox.y2")) / 2 - F.col("image_height") / 2,
        )
        key = F.col("det_score").desc_nulls_last() if settings.face_per_image == "most_confident" else centre_distance
        best = Window.partitionBy("image_id").orderBy(key, F.col("face_index"))
        frame = frame.withColumn("_n", F.row_number().over(best)).where("_n = 1").drop("_n")
    rows = frame.select("face_id", "subject_id", "attributes", "embedding").orderBy("face_id").toArrow()
    flat = rows.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    attributes = [dict(a) if a else {} for a in rows.column("attributes").to_pylist()]
    return Labelled(
        vectors=flat.astype(np.float32).reshape(rows.num_rows, -1),
        subjects=rows.column("subject_id").to_pylist(),
        attributes=attributes,
        model_id=model_id,
        table=table,
        version=version,
        name=settings.name or table,
    )


def make_pairs(labelled: Labelled, config: AuditConfig) -> tuple[PairSet, np.ndarray]:
    settings = config.audit.labelled
    codes = subject_codes(labelled.subjects)
    within = settings.impostors_within
    keys = [tuple(a.get(name) for name in within) for a in labelled.attributes]
    blocks = subject_codes([repr(k) for k in keys]) if within else np.zeros(len(keys), np.int64)
    pairs = build_pairs(codes, blocks, settings.genuine_max, settings.impostor_max, settings.seed)
    return pairs, pair_scores(labelled.vectors, pairs.a, pairs.b)


def verification(labelled: Labelled, pairs: PairSet, scores: np.ndarray, config: AuditConfig, global_t: Threshold):
    """1:1 numbers: counts, EER, operating points with intervals, per-group rates at the global threshold."""
    settings = config.audit
    genuine, impostor = scores[pairs.genuine], scores[~pairs.genuine]
    if len(impostor) == 0:
        raise UserError(f"{labelled.name}: no impostor pairs (one subject only?): nothing to measure FMR on")
    out: dict[str, Any] = {"pairs": pairs.counts, "sampled_impostors": pairs.sampled_impostors}
    out["faces"] = len(labelled.subjects)
    out["subjects"] = len({s for s in labelled.subjects if s is not None})
    if len(genuine):
        eer, eer_t = equal_error_rate(genuine, impostor)
        out["eer"], out["eer_threshold"] = eer, eer_t
    points = []
    for target in settings.fmr_targets:
        point = operating_point(genuine, impostor, target).as_dict()
        point.update(bootstrap_rates(genuine, impostor, point["threshold"], settings.bootstrap_rounds, 1))
        points.append(point)
    out["operating_points"] = points
    threshold = global_t.value
    if threshold is None:  # global_threshold measures one when none is configured
        raise RuntimeError("no global threshold to compare groups at: a bug, please report it")
    out["global_threshold"] = {"value": threshold, "source": global_t.source}
    fmr, fnmr = fmr_fnmr(genuine, impostor, np.array([threshold]))
    out["global_threshold"].update(fmr=float(fmr[0]), fnmr=float(fnmr[0]) if len(genuine) else None)
    out["groups"] = {
        name: _group_rates(labelled, pairs, scores, name, threshold, settings) for name in settings.group_by
    }
    thresholds, det_fmr, det_fnmr = det_curve(genuine, impostor) if len(genuine) else (np.zeros(0),) * 3
    out["_curve"] = (thresholds, det_fmr, det_fnmr)
    out["_scores"] = (genuine, impostor)
    return out


def _group_rates(labelled, pairs: PairSet, scores, name: str, threshold: float, settings) -> dict[str, Any]:
    """Per-group FMR/FNMR at one threshold, over pairs whose two faces are in the same group."""
    # "race+gender" groups by the pair of values: differentials often hide in intersections.
    parts = name.split("+")
    values = np.array(["/".join(a.get(p, "unknown") for p in parts) for a in labelled.attributes], dtype=object)
    same = values[pairs.a] == values[pairs.b]
    rows = {}
    for group in sorted(set(values.tolist())):
        mask = same & (values[pairs.a] == group)
        genuine, impostor = scores[mask & pairs.genuine], scores[mask & ~pairs.genuine]
        fmr, fnmr = fmr_fnmr(genuine, impostor, np.array([threshold]))
        ci = bootstrap_rates(genuine, impostor, threshold, settings.bootstrap_rounds, 2)
        rows[group] = {
            "impostor_pairs": int(len(impostor)),
            "genuine_pairs": int(len(genuine)),
            "fmr": float(fmr[0]) if len(impostor) else None,
            "fnmr": float(fnmr[0]) if len(genuine) else None,
            "false_matches": int(round(fmr[0] * len(impostor))),
            **ci,
        }
    fmr_ratio, fmr_note = ratio_max_min({g: r["fmr"] for g, r in rows.items()})
    fnmr_ratio, fnmr_note = ratio_max_min({g: r["fnmr"] for g, r in rows.items()})
    return {
        "threshold": threshold,
        "groups": rows,
        "fmr_max_min_ratio": fmr_ratio,
        "fmr_ratio_note": fmr_note,
        "fnmr_max_min_ratio": fnmr_ratio,
        "fnmr_ratio_note": fnmr_note,
        "cross_group_pairs_excluded": int((~same).sum()),
    }


def load_searches(spark, config: AuditConfig) -> tuple[ident.Searches, dict[str, Any]]:
    """A query run's matches reduced to searches; the gallery's subjects come from the index manifest's
    faces table at the version the index pinned."""
    from pyspark.sql import functions as F

    from jobs.index.shards import read_manifest

    settings = config.audit.identification
    table = config.locations.table(settings.matches_table, "matches")
    matches, _ = read_pinned(spark, table, None, "audit.identification.matches_table", "run `lineup query`")
    if "queried_at" not in matches.columns:
        raise UserError(f"audit.identification.matches_table {table} is not a matches table; run `lineup query`")
    latest = matches.orderBy(F.col("queried_at").desc()).select("run_id").first()
    if latest is None:
        raise UserError(f"audit.identification.matches_table {table} holds no query runs; run `lineup query`")
    run_id = settings.run_id or latest["run_id"]
    run = matches.where((F.col("run_id") == run_id) & (F.col("probe_status") == "ok"))
    frame = run.select(
        "probe_face_id",
        "probe_subject_id",
        "probe_attributes",
        "rank",
        "gallery_face_id",
        "gallery_subject_id",
        "score",
    ).toPandas()
    if frame.empty:
        raise UserError(f"run {run_id} has no searched probes in {table}")
    index_row = run.select("index_id", "model_id", "gallery_size").first()
    index_dir = settings.index_dir
    if index_dir is None:
        runs_frame = read_latest_if_any(spark, config.runs_table_path())
        runs = runs_frame.where(F.col("run_id") == run_id).collect() if runs_frame is not None else []
        index_dir = next((i.path for r in runs for i in r.inputs if i.name == "index"), None)
    if index_dir is None:
        raise UserError(
            f"run {run_id} is not in the runs table {config.runs_table_path()}: set audit.identification.index_dir"
        )
    manifest = read_manifest(Path(index_dir))
    gallery = spark.read.format("delta").option("versionAsOf", manifest["faces_version"]).load(manifest["faces_table"])
    enrolled = {
        r.subject_id
        for r in gallery.where((F.col("status") == "ok") & F.col("subject_id").isNotNull())
        .select("subject_id")
        .distinct()
        .collect()
    }
    frame["probe_attributes"] = [dict(a) if a is not None else {} for a in frame["probe_attributes"]]
    unlabelled = int(frame.loc[frame["probe_subject_id"].isna(), "probe_face_id"].nunique())
    info = {
        "matches_table": table,
        "run_id": run_id,
        "index_id": index_row.index_id,
        "model_id": index_row.model_id,
        "gallery_size": int(index_row.gallery_size),
        "gallery_subjects": len(enrolled),
        "gallery_table": manifest["faces_table"],
        "gallery_version": manifest["faces_version"],
        "unlabelled_probes_left_out": unlabelled,
    }
    return ident.searches_from_matches(frame, enrolled), info


def identification(searches: ident.Searches, info: dict, config: AuditConfig, scenario: dict[str, float]):
    settings = config.audit
    out: dict[str, Any] = {**info, "k": searches.k, "searches": len(searches.table)}
    out["non_mated_searches"] = int((~searches.table["mated"]).sum())
    out.update(ident.rank_hit_rates(searches))
    out["fnir_at_fpir"] = [ident.fnir_at_fpir(searches, target) for target in settings.fpir_targets]
    groups = settings.group_by
    out["scenario"] = ident.scenario_replay(searches, scenario, groups).to_dict(orient="records") if scenario else []
    out["_searches"] = searches
    return out


def global_threshold(config: AuditConfig, model_id: str, impostor: np.ndarray | None) -> Threshold:
    """The threshold groups are compared at: the configured one, else the one at differential_fmr here."""
    from jobs.audit.metrics import threshold_at_fmr

    chosen = resolve_threshold(config.audit.threshold, model_id, config.spark.resolved_data_root(), "audit.threshold")
    if chosen.value is not None or impostor is None:
        return chosen
    target = config.audit.differential_fmr
    return Threshold(threshold_at_fmr(impostor, target), f"fmr:{target:g} on this data")


def scenario_thresholds(config: AuditConfig, model_id: str, points: list[dict] | None) -> dict[str, float]:
    labels = {f"fixed {t:g}": t for t in config.audit.scenario_thresholds}
    for point in points or []:
        labels[f"calibrated FMR {point['target_fmr']:g} (this audit)"] = point["threshold"]
    for reference in config.audit.scenario_calibrations:
        record = load_calibration(reference, config.spark.resolved_data_root(), "audit.scenario_calibrations")
        if record["model_id"] != model_id:
            raise UserError(
                f"audit.scenario_calibrations {reference} is for model {record['model_id']}, not {model_id}"
            )
        labels[f"calibration {record['calibration_id']} (FMR {record['target_fmr']:g})"] = float(record["threshold"])
    return labels


def run_audit(config: AuditConfig, spark=None) -> dict[str, Any]:
    params = config.audit.model_dump(mode="json")
    return run_job("audit", config, spark, params, lambda spark, r, phases: _timed(config, spark, r, phases))


def _timed(config: AuditConfig, spark, record: RunRecord, phases: Phases) -> dict[str, Any]:
    with phases.phase("measure_and_write"):
        return _run(config, spark, record)


def _run(config: AuditConfig, spark, record: RunRecord) -> dict[str, Any]:
    from jobs.audit.report import write_report

    summary: dict[str, Any] = {"job": "audit", "run_id": record.run_id, "status": "ok"}
    one_to_one = one_to_n = None
    model_id = None
    points = None
    if config.audit.labelled.faces_table:
        labelled = load_labelled(spark, config)
        model_id = labelled.model_id
        record.add_input("labelled_faces", labelled.table, labelled.version)
        pairs, scores = make_pairs(labelled, config)
        threshold = global_threshold(config, model_id, scores[~pairs.genuine])
        one_to_one = verification(labelled, pairs, scores, config, threshold)
        one_to_one.update(data=labelled.name, data_table=labelled.table, data_version=labelled.version)
        points = one_to_one["operating_points"]
        record.threshold, record.threshold_source = threshold.value, threshold.source
    if config.audit.identification.matches_table:
        searches, info = load_searches(spark, config)
        if model_id is not None and info["model_id"] != model_id:
            raise UserError(f"the matches come from model {info['model_id']}, the labelled faces from {model_id}")
        model_id = info["model_id"]
        record.add_input("matches", info["matches_table"], delta_version(spark, info["matches_table"]))
        one_to_n = identification(searches, info, config, scenario_thresholds(config, model_id, points))
    metrics_table = config.metrics_table_path()
    rows = metric_rows(record.run_id, model_id, one_to_one, one_to_n)
    append_with_retries(spark.createDataFrame(rows, METRICS_DDL), metrics_table)
    record.add_output("audit_metrics", metrics_table, delta_version(spark, metrics_table))
    report = write_report(config.report_path() / f"{record.run_id}.html", record.run_id, model_id, one_to_one, one_to_n)
    record.counts = {"metric_rows": len(rows)}
    if one_to_one:
        record.counts.update(one_to_one["pairs"])
        summary["one_to_one"] = _public(one_to_one)
    if one_to_n:
        record.counts["searches"] = one_to_n["searches"]
        summary["one_to_n"] = _public(one_to_n)
    runs_version = append_run(spark, config.runs_table_path(), record, "ok")
    summary["model_id"] = model_id
    summary["outputs"] = {
        "metrics_table": metrics_table,
        "metrics_version": record.outputs[-1]["version"],
        "report": str(report),
        "runs_table": config.runs_table_path(),
        "runs_version": runs_version,
    }
    return summary


def _public(section: dict) -> dict:
    """The section without its private arrays (curves, scores), rounded for a JSON line."""
    return {k: v for k, v in section.items() if not k.startswith("_")}


def metric_rows(run_id: str, model_id: str | None, one: dict | None, many: dict | None) -> list[dict]:
    now = dt.datetime.now(dt.UTC)
    rows: list[dict] = []

    def add(scope, metric, value, threshold=None, target=None, group=None, low=None, high=None, n=None, data=None):
        rows.append(
            {
                "run_id": run_id,
                "scope": scope,
                "metric": metric,
                "value": None if value is None else float(value),
                "threshold": threshold,
                "target": target,
                "group_name": group,
                "ci_low": low,
                "ci_high": high,
                "n": n,
                "data": data,
                "data_version": one.get("data_version") if one and scope.startswith("1:1") else None,
                "model_id": model_id,
                "created_at": now,
            }
        )

    if one:
        data, imp, gen = one["data"], one["pairs"]["impostor_pairs"], one["pairs"]["genuine_pairs"]
        if "eer" in one:
            add("1:1", "eer", one["eer"], threshold=one["eer_threshold"], n=gen + imp, data=data)
        for p in one["operating_points"]:
            add("1:1", "threshold_at_fmr", p["threshold"], target=p["target_fmr"], n=imp, data=data)
            add(
                "1:1",
                "fmr",
                p["fmr"],
                p["threshold"],
                p["target_fmr"],
                None,
                p["fmr_ci_low"],
                p["fmr_ci_high"],
                imp,
                data,
            )
            add(
                "1:1",
                "fnmr",
                p["fnmr"],
                p["threshold"],
                p["target_fmr"],
                None,
                p["fnmr_ci_low"],
                p["fnmr_ci_high"],
                gen,
                data,
            )
        for attribute, result in one["groups"].items():
            t = result["threshold"]
            for group, r in result["groups"].items():
                name = f"{attribute}={group}"
                add(
                    "1:1 group",
                    "fmr",
                    r["fmr"],
                    t,
                    None,
                    name,
                    r["fmr_ci_low"],
                    r["fmr_ci_high"],
                    r["impostor_pairs"],
                    data,
                )
                add(
                    "1:1 group",
                    "fnmr",
                    r["fnmr"],
                    t,
                    None,
                    name,
                    r["fnmr_ci_low"],
                    r["fnmr_ci_high"],
                    r["genuine_pairs"],
                    data,
                )
            add("1:1 group", "fmr_max_min_ratio", result["fmr_max_min_ratio"], t, group=attribute, data=data)
    if many:
        data = f"{many['matches_table']} run {many['run_id']} (gallery {many['gallery_size']} faces)"
        for rank in (1, 5, 10):
            if f"rank_{rank}_hit_rate" in many:
                add("1:N", f"rank_{rank}_hit_rate", many[f"rank_{rank}_hit_rate"], n=many["mated_searches"], data=data)
        for p in many["fnir_at_fpir"]:
            if p.get("threshold") is not None:
                add("1:N", "fnir", p["fnir"], p["threshold"], p["target_fpir"], n=p["mated_searches"], data=data)
                add("1:N", "fpir", p["fpir"], p["threshold"], p["target_fpir"], n=p["non_mated_searches"], data=data)
        for s in many["scenario"]:
            for metric in ("fpir", "false_candidates"):
                group = f"{s['threshold_label']}: {s['group']}"
                add("scenario", metric, s[metric], s["threshold"], None, group, n=s["searches"], data=data)
    return rows


def run_calibrate(config: AuditConfig, target_fmr: float, spark=None) -> dict[str, Any]:
    """Store the threshold that gives `target_fmr` on the labelled data, with everything that qualifies it."""

    if not config.audit.labelled.faces_table:
        raise UserError("calibrate needs audit.labelled.faces_table (labelled faces to draw impostor pairs from)")
    params = {**config.audit.model_dump(mode="json"), "target_fmr": target_fmr}

    def body(spark, record: RunRecord, phases: Phases) -> dict[str, Any]:
        with phases.phase("calibrate"):
            return _calibrate(config, spark, record, target_fmr)

    return run_job("audit-calibrate", config, spark, params, body)


def _calibrate(config: AuditConfig, spark, record: RunRecord, target_fmr: float) -> dict[str, Any]:
    labelled = load_labelled(spark, config)
    record.add_input("labelled_faces", labelled.table, labelled.version)
    pairs, scores = make_pairs(labelled, config)
    genuine, impostor = scores[pairs.genuine], scores[~pairs.genuine]
    if len(impostor) == 0:
        raise UserError(f"{labelled.name}: no impostor pairs to calibrate on")
    point = operating_point(genuine, impostor, target_fmr)
    ci = bootstrap_rates(genuine, impostor, point.threshold, config.audit.bootstrap_rounds, 3)
    calibration = {
        "calibration_id": f"cal-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}",
        "threshold": point.threshold,
        "target_fmr": target_fmr,
        "measured_fmr": point.fmr,
        "measured_fnmr": point.fnmr if len(genuine) else None,
        "false_matches": point.false_matches,
        "impostor_pairs": point.impostor_pairs,
        "genuine_pairs": point.genuine_pairs,
        "resolvable": point.resolvable,
        **ci,
        "model_id": labelled.model_id,
        "data": {
            "name": labelled.name,
            "table": labelled.table,
            "version": labelled.version,
            "where": config.audit.labelled.where,
            "faces": len(labelled.subjects),
            "impostors_within": config.audit.labelled.impostors_within,
            "sampled_impostors": pairs.sampled_impostors,
            "seed": config.audit.labelled.seed,
        },
        "method": "lowest threshold with FMR <= target (score >= threshold matches)",
        "run_id": record.run_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    if not point.resolvable:
        log.warning(
            "%d impostor pairs cannot measure FMR %g: the stored threshold sits above every impostor score",
            point.impostor_pairs,
            target_fmr,
        )
    path = write_calibration(config.spark.resolved_data_root(), calibration)
    row = {
        "calibration_id": calibration["calibration_id"],
        "threshold": point.threshold,
        "target_fmr": target_fmr,
        "measured_fmr": point.fmr,
        "measured_fnmr": calibration["measured_fnmr"],
        "model_id": labelled.model_id,
        "data_name": labelled.name,
        "data_table": labelled.table,
        "data_version": labelled.version,
        "genuine_pairs": point.genuine_pairs,
        "impostor_pairs": point.impostor_pairs,
        "resolvable": point.resolvable,
        "record": json.dumps(calibration, sort_keys=True),
        "created_at": dt.datetime.now(dt.UTC),
    }
    table = config.calibrations_table_path()
    append_with_retries(spark.createDataFrame([row], CALIBRATIONS_DDL), table)
    record.add_output("calibrations", table, delta_version(spark, table))
    record.threshold, record.threshold_source = point.threshold, f"calibration:{calibration['calibration_id']}"
    record.counts = {"genuine_pairs": point.genuine_pairs, "impostor_pairs": point.impostor_pairs}
    runs_version = append_run(spark, config.runs_table_path(), record, "ok")
    return {
        "job": "audit-calibrate",
        "run_id": record.run_id,
        "status": "ok",
        **{k: v for k, v in calibration.items() if k not in ("run_id",)},
        "outputs": {"calibration_file": str(path), "calibrations_table": table, "runs_version": runs_version},
    }
