"""The audit_metrics table: one long-format row per measured number, saying what it was measured on."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class MetricRow:
    """One number of an audit and what qualifies it (built with keywords: the fields are many and alike)."""

    scope: str  # "1:1", "1:1 group", "1:N", "scenario"; "1:1 normalized", "1:1 group normalized"
    metric: str
    value: float | None
    threshold: float | None = None
    target: float | None = None
    group_name: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    data: str | None = None
    data_version: int | None = None

    def as_row(self, run_id: str, model_id: str | None, created_at: dt.datetime) -> dict[str, Any]:
        row = asdict(self)
        row["value"] = None if self.value is None else float(self.value)
        return {"run_id": run_id, **row, "model_id": model_id, "created_at": created_at}


def metric_rows(
    run_id: str, model_id: str | None, one: dict | None, many: dict | None, normalized: dict | None = None
) -> list[dict]:
    """Every number of the 1:1 and 1:N sections as rows of the audit_metrics table; the 1:1 numbers on
    normalized scores, when measured, are rows of scopes "1:1 normalized" and "1:1 group normalized"."""
    rows = (one_to_one_rows(one) if one else []) + (one_to_n_rows(many) if many else [])
    if normalized:
        rows += [replace(row, scope=f"{row.scope} normalized") for row in one_to_one_rows(normalized)]
    now = dt.datetime.now(dt.UTC)
    return [row.as_row(run_id, model_id, now) for row in rows]


def one_to_one_rows(one: dict) -> list[MetricRow]:
    base = {"data": one["data"], "data_version": one.get("data_version")}
    imp, gen = one["pairs"]["impostor_pairs"], one["pairs"]["genuine_pairs"]
    rows: list[MetricRow] = []
    if "eer" in one:
        rows.append(MetricRow("1:1", "eer", one["eer"], threshold=one["eer_threshold"], n=gen + imp, **base))
    for p in one["operating_points"]:
        at = {"threshold": p["threshold"], "target": p["target_fmr"]}
        rows.append(MetricRow("1:1", "threshold_at_fmr", p["threshold"], target=p["target_fmr"], n=imp, **base))
        rows.append(
            MetricRow("1:1", "fmr", p["fmr"], ci_low=p["fmr_ci_low"], ci_high=p["fmr_ci_high"], n=imp, **at, **base)
        )
        rows.append(
            MetricRow("1:1", "fnmr", p["fnmr"], ci_low=p["fnmr_ci_low"], ci_high=p["fnmr_ci_high"], n=gen, **at, **base)
        )
    for attribute, result in one["groups"].items():
        t = result["threshold"]
        for group, r in result["groups"].items():
            name = f"{attribute}={group}"
            for metric, pairs in (("fmr", "impostor_pairs"), ("fnmr", "genuine_pairs")):
                rows.append(
                    MetricRow(
                        "1:1 group",
                        metric,
                        r[metric],
                        threshold=t,
                        group_name=name,
                        ci_low=r[f"{metric}_ci_low"],
                        ci_high=r[f"{metric}_ci_high"],
                        n=r[pairs],
                        **base,
                    )
                )
        ratio = result["fmr_max_min_ratio"]
        rows.append(MetricRow("1:1 group", "fmr_max_min_ratio", ratio, threshold=t, group_name=attribute, **base))
    return rows


def one_to_n_rows(many: dict) -> list[MetricRow]:
    data = f"{many['matches_table']} run {many['run_id']} (gallery {many['gallery_size']} faces)"
    rows: list[MetricRow] = []
    for rank in (1, 5, 10):
        if f"rank_{rank}_hit_rate" in many:
            value = many[f"rank_{rank}_hit_rate"]
            rows.append(MetricRow("1:N", f"rank_{rank}_hit_rate", value, n=many["mated_searches"], data=data))
    for p in many["fnir_at_fpir"]:
        if p.get("threshold") is not None:
            at = {"threshold": p["threshold"], "target": p["target_fpir"], "data": data}
            rows.append(MetricRow("1:N", "fnir", p["fnir"], n=p["mated_searches"], **at))
            rows.append(MetricRow("1:N", "fpir", p["fpir"], n=p["non_mated_searches"], **at))
    for band in many.get("quality_bands", []):
        at = {"threshold": band["threshold"], "target": band["target_fpir"], "group_name": band["band"], "data": data}
        rows.append(MetricRow("1:N quality", "fnir", band["fnir"], n=band["mated_searches"], **at))
        rows.append(MetricRow("1:N quality", "fpir", band["fpir"], n=band["non_mated_searches"], **at))
    for s in many["scenario"]:
        group = f"{s['threshold_label']}: {s['group']}"
        for metric in ("fpir", "false_candidates"):
            rows.append(
                MetricRow(
                    "scenario",
                    metric,
                    s[metric],
                    threshold=s["threshold"],
                    group_name=group,
                    n=s["searches"],
                    data=data,
                )
            )
    return rows
