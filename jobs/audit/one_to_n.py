"""1:N identification from a query run's searches: rank hit rates, FNIR at FPIR targets, and the
scenario replay (false matches per probe group at fixed and calibrated thresholds)."""

from __future__ import annotations

from typing import Any

from jobs.audit import identification as ident
from jobs.audit.config import AuditConfig
from jobs.audit.quality_bands import search_bands
from jobs.common.calibrations import load_calibration
from jobs.common.errors import UserError


def identification(
    searches: ident.Searches, info: dict, config: AuditConfig, scenario: dict[str, float]
) -> dict[str, Any]:
    settings = config.audit
    out: dict[str, Any] = {**info, "k": searches.k, "searches": len(searches.table)}
    out["non_mated_searches"] = int((~searches.table["mated"]).sum())
    out.update(ident.rank_hit_rates(searches))
    out["fnir_at_fpir"] = [ident.fnir_at_fpir(searches, target) for target in settings.fpir_targets]
    out["quality_bands"] = search_bands(searches, out["fnir_at_fpir"])
    groups = settings.group_by
    ident.check_group_by(groups, searches.table["probe_attributes"], f"query run {info['run_id']}'s probes")
    out["scenario"] = ident.scenario_replay(searches, scenario, groups).to_dict(orient="records") if scenario else []
    return out


def scenario_thresholds(config: AuditConfig, model_id: str, points: list[dict] | None) -> dict[str, float]:
    labels = {f"fixed {t:g}": t for t in config.audit.scenario_thresholds}
    for point in points or []:
        labels[f"calibrated FMR {point['target_fmr']:g} (this audit)"] = point["threshold"]
    for reference in config.audit.scenario_calibrations:
        record = load_calibration(reference, config.spark.resolved_data_root(), "audit.scenario_calibrations")
        if record.model_id != model_id:
            raise UserError(f"audit.scenario_calibrations {reference} is for model {record.model_id}, not {model_id}")
        if record.normalization is not None and record.raw_threshold is not None:
            # the replay reads raw scores: use the record's raw threshold
            label = f"calibration {record.calibration_id} (FMR {record.target_fmr:g}, its raw threshold)"
            labels[label] = record.raw_threshold
            continue
        labels[f"calibration {record.calibration_id} (FMR {record.target_fmr:g})"] = record.threshold
    return labels
