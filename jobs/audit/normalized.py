"""The audit's second view: the same pairs with normalized scores, beside the raw ones.

The normalization comes from a calibration record: `audit.normalization`, or else the calibration in
`audit.threshold.calibration` when that record normalizes. Thresholds: a normalizing calibration in
`audit.threshold` gives both (its raw threshold for raw scores, its own for normalized ones); otherwise
both sides are compared at the threshold giving `audit.differential_fmr` on this data, each on its own
scores, so the two views share one overall FMR.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from jobs.audit.config import AuditConfig
from jobs.audit.pairs import PairSet
from jobs.common.errors import UserError
from jobs.common.fmr import threshold_at_fmr
from jobs.common.thresholds import Threshold, ThresholdSettings, resolve_threshold


def normalizing_threshold(config: AuditConfig, model_id: str) -> Threshold | None:
    """The calibration whose normalization the audit applies, or None (raw scores only)."""
    data_root = config.spark.resolved_data_root()
    if config.audit.normalization:
        settings = ThresholdSettings(calibration=config.audit.normalization)
        chosen = resolve_threshold(settings, model_id, data_root, "audit.normalization")
        if chosen.normalization is None:
            raise UserError(
                f"audit.normalization {config.audit.normalization} is a calibration without a normalization: "
                "calibrate with `lineup audit calibrate --normalization fsn`"
            )
        return chosen
    chosen = resolve_threshold(config.audit.threshold, model_id, data_root, "audit.threshold")
    return chosen if chosen.normalization is not None else None


def raw_threshold(configured: Threshold) -> Threshold:
    """A normalizing calibration's threshold for raw scores (the one it measured before normalizing)."""
    if configured.normalization is None or configured.calibration is None:
        return configured
    if configured.calibration.raw_threshold is None:
        raise UserError(f"calibration {configured.calibration.calibration_id} normalizes but has no raw_threshold")
    value = configured.calibration.raw_threshold
    return replace(configured, value=value, source=f"{configured.source} (raw)", normalization=None)


def normalized_view(
    config: AuditConfig,
    normalizing: Threshold,
    configured: Threshold,
    vectors: np.ndarray,
    pairs: PairSet,
    raw: np.ndarray,
) -> tuple[np.ndarray, Threshold]:
    """(normalized scores of the pairs, the threshold they are compared at): the normalizing calibration's
    own threshold when it is also the configured one, else the one at `differential_fmr` on these scores."""
    normalization = normalizing.normalization
    if normalization is None:
        raise RuntimeError("normalized_view needs a normalizing calibration: a bug, please report it")
    if normalization.centres.shape[1] != vectors.shape[1]:
        raise UserError(
            f"{normalizing.source}: its normalization is {normalization.centres.shape[1]}-d, "
            f"the faces {vectors.shape[1]}-d"
        )
    scores = normalization.normalize_pairs(vectors, pairs.a, pairs.b, raw).astype(np.float32)
    if configured.source == normalizing.source:
        return scores, normalizing
    target = config.audit.differential_fmr
    value = threshold_at_fmr(scores[~pairs.genuine], target)
    return scores, replace(normalizing, value=value, source=f"fmr:{target:g} on this data, normalized scores")
