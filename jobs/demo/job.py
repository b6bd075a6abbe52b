"""`lineup demo`: embed, index, calibrate, query and audit LFW locally, then print the 2018 test replayed:
false matches of non-mated searches at a fixed threshold beside a calibrated one.

Every step is the real job with its own runs row; a rerun reuses what exists (embedding skips the
photographs already in the faces tables, the staged links are kept).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from jobs.audit.config import AuditConfig
from jobs.audit.job import run_audit, run_calibrate
from jobs.common.config import LineupConfig
from jobs.common.results import AuditResult, CalibrationResult, IndexResult, QueryResult
from jobs.common.spark import get_spark
from jobs.demo.config import DemoConfig
from jobs.demo.plan import plan_demo, stage
from jobs.demo.probe_filter import HEADER, FilterEffect, filter_effect
from jobs.demo.races import ATTRIBUTES_FROM_NAME, false_candidates_by_race, race_table, split_utkface
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from jobs.faces.quality_filter import quality_floor
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.query.config import QueryConfig
from jobs.query.job import run_query

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
C = TypeVar("C", bound=LineupConfig)
STEPS = 9


def data_dir(config: DemoConfig) -> Path:
    given = config.demo.data or os.environ.get("LINEUP_DATA_DIR")
    if given:
        return Path(given).expanduser().resolve()
    return (Path(__file__).resolve().parents[2].parent / "shared" / "data").resolve()


def run_demo(config: DemoConfig, spark: SparkSession | None = None) -> dict[str, Any]:
    spark = spark or get_spark(config.spark, app_name="lineup-demo")
    # The demo stages LFW archives as local files: its work folder is local.
    work = Path(config.demo.work_dir).expanduser().resolve() if config.demo.work_dir else None
    work = work or Path(str(config.spark.resolved_data_root() / "demo"))
    plan = plan_demo(data_dir(config) / "lfw" / "images", config.demo.people)
    log.info("demo plan (LFW, seeded): %s", plan.counts)
    shared = LineupConfig.model_validate(
        config.model_dump(include={"spark", "log_level", "runs_table", "erasures_table", "catalog_database"})
    )
    steps = _Steps(shared, work, spark)
    for number, role in enumerate(("gallery", "probes", "calibration"), start=1):
        log.info("demo step %d/%d: embed the %s (%d photographs)", number, STEPS, role, len(getattr(plan, role)))
        steps.embed(role, stage(getattr(plan, role), work / "archives" / role))
    log.info("demo step 4/%d: index the gallery", STEPS)
    index = steps.index()
    log.info("demo step 5/%d: calibrate the threshold at FMR %g on other people", STEPS, config.demo.target_fmr)
    calibration = steps.calibrate(config.demo.target_fmr)
    log.info("demo step 6/%d: search %d probes", STEPS, plan.counts["mated_probes"] + plan.counts["non_mated_probes"])
    query = steps.query(calibration["calibration_id"], config.demo.k)
    log.info("demo step 7/%d: the same searches with the probe quality filter AUTO", STEPS)
    filtered = steps.query(calibration["calibration_id"], config.demo.k, quality_filter="AUTO")
    gallery_people = {photo.parent.name for photo in plan.gallery}
    effects = [
        filter_effect(steps.matches_of(run["run_id"]), gallery_people, level)
        for level, run in (("NONE", query), (str(filtered["quality_filter"]), filtered))
    ]
    log.info("demo step 8/%d: audit the searches", STEPS)
    audit = steps.audit(query, calibration["calibration_id"], config.demo.fixed_threshold)
    replay = replay_rows(audit["one_to_n"], config.demo.fixed_threshold, calibration)
    _print_table(replay, plan.counts, audit["one_to_n"], calibration, effects)
    races = _races_half(config, steps, data_dir(config) / "utkface-dev", work)
    log.info("tables under %s; HTML report %s", work / "tables", audit["outputs"]["report"])
    return {
        "job": "demo",
        "status": "ok",
        "plan": plan.counts,
        "replay": replay,
        "calibration": {
            k: calibration[k]
            for k in ("calibration_id", "threshold", "target_fmr", "measured_fmr", "impostor_pairs", "resolvable")
        },
        "index": {k: index[k] for k in ("index_id", "factory", "vectors")},
        "rank_1_hit_rate": audit["one_to_n"].get("rank_1_hit_rate"),
        "probe_filter": [asdict(effect) for effect in effects],
        "false_candidates_by_race": races,
        "query_run_id": query["run_id"],
        "embedded_now": steps.embedded_now,
        "outputs": {**steps.outputs, "report": audit["outputs"]["report"]},
    }


def _races_half(config: DemoConfig, steps: _Steps, folder: Path, work: Path) -> dict[str, Any] | None:
    """Who the false matches fall on: utkface-dev's non-mated searches per race, at the calibrated
    threshold raw and after FSN learnt without labels (both calibrated on the gallery half)."""
    if not folder.is_dir():
        log.info("demo: no utkface-dev at %s: the per-race half of the replay is skipped", folder)
        return None
    gallery, probes = split_utkface(folder, config.demo.race_images)
    log.info(
        "demo step 9/%d: who the false matches fall on (utkface-dev, %d + %d faces)", STEPS, len(gallery), len(probes)
    )
    labels = {"attributes_from_name": ATTRIBUTES_FROM_NAME}
    for role, photos in (("utk_gallery", gallery), ("utk_probes", probes)):
        steps.embed(role, stage(photos, work / "archives" / role), labels)
    index = steps.index("utk_gallery", "utk_index")
    target, name = config.demo.race_target_fmr, "utkface-dev gallery half (every face a different person)"
    calibrations = {
        "raw": steps.calibrate(target, "utk_gallery", name),
        "fsn": steps.calibrate(target, "utk_gallery", name, normalization="fsn"),
    }
    runs = {
        kind: steps.query(c["calibration_id"], config.demo.k, probes="utk_probes", index="utk_index")
        for kind, c in calibrations.items()
    }
    rows = false_candidates_by_race(steps.matches_of(runs["raw"]["run_id"]), steps.matches_of(runs["fsn"]["run_id"]))
    fmr = {kind: float(c["measured_fmr"]) for kind, c in calibrations.items()}
    lines = [
        f"The 2018 test's other finding on utkface-dev: {sum(r.searches for r in rows)} non-mated searches against "
        f"a gallery of {index['vectors']:,} other UTKFace faces (k = {config.demo.k}), thresholds at FMR {target:g} "
        f"({calibrations['raw']['threshold']:.4f} raw, measured {fmr['raw']:.2g}; FSN measured {fmr['fsn']:.2g}):",
        *race_table(rows, int(index["vectors"]), fmr["raw"], fmr["fsn"]),
    ]
    log.info("\n%s", "\n".join(lines))
    return {"gallery_faces": int(index["vectors"]), "measured_fmr": fmr, "rows": [asdict(r) for r in rows]}


class _Steps:
    """Each step is a real job run on the shared session, with its locations under the work folder."""

    def __init__(self, shared: LineupConfig, work: Path, spark: SparkSession) -> None:
        self.shared, self.work, self.spark = shared.model_dump(), work, spark
        self.embedded_now: dict[str, int] = {}
        self.outputs: dict[str, str] = {"index_dir": str(work / "index")}

    def _config(self, model: type[C], section: str, settings: dict) -> C:
        return model.model_validate({**self.shared, section: settings})

    def table(self, name: str) -> str:
        self.outputs[f"{name}_table"] = str(self.work / "tables" / name)
        return self.outputs[f"{name}_table"]

    def embed(self, role: str, folder: Path, labels: dict[str, str] | None = None) -> None:
        settings = {
            "input": {"kind": "dir", "path": str(folder), "follow_symlinks": True},
            "table_path": self.table(f"{role}_faces"),
            "labels": labels or {"subject_from_path": "([^/]+)/[^/]+$"},
        }
        summary = run_embed(self._config(EmbedConfig, "embed", settings), self.spark)
        self.embedded_now[role] = int(summary["files_processed"])

    def index(self, faces: str = "gallery", name: str = "index") -> IndexResult:
        self.outputs[f"{name}_dir"] = str(self.work / name)
        settings = {"faces_table": self.outputs[f"{faces}_faces_table"], "index_dir": self.outputs[f"{name}_dir"]}
        return run_index(self._config(IndexConfig, "index", settings), self.spark)

    def calibrate(
        self, target_fmr: float, faces: str = "calibration", name: str = "LFW calibration people", **options: Any
    ) -> CalibrationResult:
        settings = {
            "labelled": {"faces_table": self.outputs[f"{faces}_faces_table"], "name": name},
            "calibrations_table": self.table("calibrations"),
        }
        return run_calibrate(self._config(AuditConfig, "audit", settings), target_fmr, self.spark, **options)

    def query(
        self, calibration_id: str, k: int, quality_filter: str = "NONE", probes: str = "probes", index: str = "index"
    ) -> QueryResult:
        settings = {
            "quality_filter": quality_filter,
            # A probe photograph is about its most confident face (LFW: the named person); the others
            # are bystanders whose names nobody gave.
            "probes": {"faces_table": self.outputs[f"{probes}_faces_table"], "where": "face_index = 0"},
            "index_dir": self.outputs[f"{index}_dir"],
            "k": k,
            "threshold": {"calibration": calibration_id},
            "matches_table": self.table("matches"),
            "identities_table": self.table("identities"),
        }
        return run_query(self._config(QueryConfig, "query", settings), self.spark)

    def matches_of(self, run_id: str) -> pd.DataFrame:
        """One query run's matches rows, as `filter_effect` and `false_candidates_by_race` read them."""
        from pyspark.sql import functions as F

        columns = ["probe_face_id", "probe_subject_id", "probe_attributes", "probe_status", "rank"]
        columns += ["gallery_subject_id", "above_threshold"]
        frame = self.spark.read.format("delta").load(self.outputs["matches_table"])
        return cast("pd.DataFrame", frame.where(F.col("run_id") == run_id).select(*columns).toPandas())

    def audit(self, query: QueryResult, calibration_id: str, fixed: float) -> AuditResult:
        settings = {
            "identification": {"matches_table": self.outputs["matches_table"], "run_id": query["run_id"]},
            "scenario_thresholds": [fixed],
            "scenario_calibrations": [calibration_id],
            "metrics_table": self.table("audit_metrics"),
            "calibrations_table": self.outputs["calibrations_table"],
            "report_dir": str(self.work / "reports"),
        }
        return run_audit(self._config(AuditConfig, "audit", settings), self.spark)


def replay_rows(many: Mapping[str, Any], fixed: float, calibration: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The scenario rows of the audit, one per threshold: searches, searches with a false match, FPIR."""
    rows = []
    for row in many["scenario"]:
        label = "fixed" if row["threshold"] == fixed and row["threshold_label"].startswith("fixed") else "calibrated"
        rows.append(
            {
                "threshold": round(float(row["threshold"]), 4),
                "threshold_from": row["threshold_label"]
                if label == "fixed"
                else f"calibrated at FMR {calibration['target_fmr']:g} on other people",
                "non_mated_searches": int(row["searches"]),
                "searches_with_false_match": int(row["searches_with_false_match"]),
                "false_candidates": int(row["false_candidates"]),
                "fpir": float(row["fpir"]),
            }
        )
    return rows


def _print_table(
    replay: list[dict],
    counts: Mapping[str, Any],
    many: Mapping[str, Any],
    calibration: Mapping[str, Any],
    effects: list[FilterEffect],
) -> None:
    measured = (
        f"calibration {calibration['calibration_id']}: measured FMR {calibration['measured_fmr']:.2g} on "
        f"{calibration['impostor_pairs']:,} impostor pairs of {counts['calibration_people']} other people"
        + ("" if calibration["resolvable"] else " (too few pairs to resolve the target: a conservative threshold)")
    )
    lines = [
        f"The 2018 test replayed on LFW: {counts['non_mated_probes']} people searched against a gallery of "
        f"{many['gallery_size']:,} faces ({counts['gallery_photos']:,} photographs) that holds none of them "
        f"(k = {many['k']} candidates each).",
        measured,
        f"{'threshold':>10}  {'from':<52} {'searches with a false match':>28}  {'false candidates':>16}",
    ]
    for row in replay:
        share = f"{row['searches_with_false_match']} of {row['non_mated_searches']} ({row['fpir']:.1%})"
        lines.append(
            f"{row['threshold']:>10.4f}  {row['threshold_from']:<52} {share:>28}  {row['false_candidates']:>16}"
        )
    if many.get("rank_1_hit_rate") is not None:
        lines.append(
            f"Mated searches ({many['mated_searches']}): rank-1 hit rate {many['rank_1_hit_rate']:.3f} "
            "(before any threshold)."
        )
    floor = quality_floor("AUTO")
    assert floor is not None  # AUTO always names a level
    lines.append(
        f"Probe quality filter AUTO = {floor.level} (a probe with quality below {floor.floor:g} is not searched), "
        "at the calibrated threshold:"
    )
    lines += [HEADER, *(effect.line() for effect in effects)]
    log.info("\n%s", "\n".join(lines))
