"""1:1 verification on labelled faces (numpy): genuine and impostor pairs, EER, operating points with
bootstrap intervals, and per-group FMR/FNMR at one global threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.audit.config import AuditConfig
from jobs.audit.identification import check_group_by
from jobs.audit.load import Labelled
from jobs.audit.metrics import (
    bootstrap_rates,
    det_curve,
    equal_error_rate,
    fmr_fnmr,
    operating_point,
    ratio_max_min,
)
from jobs.audit.pairs import PairSet, build_pairs, pair_scores, subject_codes
from jobs.audit.quality_bands import QUALITY_BAND, pair_bands
from jobs.common.errors import UserError
from jobs.common.fmr import threshold_at_fmr
from jobs.common.thresholds import Threshold, resolve_threshold

if TYPE_CHECKING:
    from jobs.audit.config import AuditSettings


def make_pairs(labelled: Labelled, config: AuditConfig) -> tuple[PairSet, np.ndarray]:
    settings = config.audit.labelled
    codes = subject_codes(labelled.subjects)
    within = settings.impostors_within
    keys = [tuple(a.get(name) for name in within) for a in labelled.attributes]
    blocks = subject_codes([repr(k) for k in keys]) if within else np.zeros(len(keys), np.int64)
    pairs = build_pairs(codes, blocks, settings.genuine_max, settings.impostor_max, settings.seed)
    return pairs, pair_scores(labelled.vectors, pairs.a, pairs.b)


@dataclass(frozen=True)
class Verification:
    """A 1:1 section: `summary` goes to the JSON line, the metrics table and the report's tables; the
    score arrays only feed the report's plots."""

    summary: dict[str, Any]
    curve: tuple[np.ndarray, np.ndarray, np.ndarray]  # thresholds, FMR, FNMR of the DET curve
    genuine: np.ndarray
    impostor: np.ndarray


def verification(
    labelled: Labelled, pairs: PairSet, scores: np.ndarray, config: AuditConfig, global_t: Threshold
) -> Verification:
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
    check_group_by(settings.group_by, labelled.attributes, labelled.name)
    out["groups"] = {
        name: _group_rates(_pair_groups(labelled, pairs, name), pairs, scores, threshold, settings)
        for name in settings.group_by
    }
    if labelled.qualities is not None:  # every face's quality measured: rates per quality band too
        bands = pair_bands(labelled.qualities, pairs.a, pairs.b)
        out["groups"][QUALITY_BAND] = _group_rates(bands, pairs, scores, threshold, settings)
    thresholds, det_fmr, det_fnmr = det_curve(genuine, impostor) if len(genuine) else (np.zeros(0),) * 3
    return Verification(out, (thresholds, det_fmr, det_fnmr), genuine, impostor)


def _pair_groups(labelled: Labelled, pairs: PairSet, name: str) -> np.ndarray:
    """Each pair's group by `name` when its two faces share it, else None (left out)."""
    # "race+gender" groups by the pair of values: differentials often hide in intersections.
    parts = name.split("+")
    values = np.array(["/".join(a.get(p, "unknown") for p in parts) for a in labelled.attributes], dtype=object)
    groups = values[pairs.a].copy()
    groups[values[pairs.a] != values[pairs.b]] = None
    return groups


def _group_rates(
    groups: np.ndarray, pairs: PairSet, scores: np.ndarray, threshold: float, settings: AuditSettings
) -> dict[str, Any]:
    """Per-group FMR/FNMR at one threshold; `groups` holds each pair's group (None: left out)."""
    same = groups != None  # noqa: E711 - elementwise over an object array
    rows = {}
    for group in sorted(set(groups[same].tolist())):
        mask = same & (groups == group)
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


def global_threshold(config: AuditConfig, model_id: str, impostor: np.ndarray | None) -> Threshold:
    """The threshold groups are compared at: the configured one, else the one at differential_fmr here."""

    chosen = resolve_threshold(config.audit.threshold, model_id, config.spark.resolved_data_root(), "audit.threshold")
    if chosen.value is not None or impostor is None:
        return chosen
    target = config.audit.differential_fmr
    return Threshold(threshold_at_fmr(impostor, target), f"fmr:{target:g} on this data")
