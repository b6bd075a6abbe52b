"""The unified quality score, its reasons, and the quality filter levels.

`quality` is a logistic model of the components (`jobs.models.quality`): the estimated probability that a
face's genuine comparisons clear the threshold at FMR 1e-3, fitted on LFW (`bench/bench_quality.py`
derives it and writes `jobs.models.quality_fit`; its EDC on LFW View 2 is what validates it). A model
fitted for a pack reads that pack's embedding norm too; any other pack gets the model fitted without it
(landmarks, chip and detector only).

`quality_reasons` names, in Rekognition's vocabulary, each component beyond its limit; a face below a
filter's floor also gets LOW_FACE_QUALITY.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from jobs.models import quality_fit
from jobs.models.quality import (
    EXTREME_POSE,
    LOW_BRIGHTNESS,
    LOW_CONFIDENCE,
    LOW_SHARPNESS,
    SMALL_BOUNDING_BOX,
    QualityComponents,
)
from jobs.models.quality_fit import FLOORS, MEASURED_ON, REASON_LIMITS

QualityLevel = Literal["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"]


@dataclass(frozen=True)
class FittedModel:
    """A logistic model over standardised features: quality = 1 / (1 + exp(-(bias + w . z)))."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    fitted_on: str

    def score(self, values: dict[str, float]) -> float:
        z = self.bias + sum(
            w * (values[name] - m) / s for name, m, s, w in zip(self.features, self.mean, self.scale, self.weights)
        )
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


FITTED = {model_id: FittedModel(**fields) for model_id, fields in quality_fit.MODELS.items()}
GENERIC = FittedModel(**quality_fit.GENERIC)


def feature_values(c: QualityComponents) -> dict[str, float]:
    """The model's inputs: each component on the scale along which it matters most."""
    return {
        "log2_inter_eye_px": math.log2(max(c.inter_eye_px, 1.0)),
        "abs_yaw_deg": abs(c.yaw_deg),
        "abs_pitch_deg": abs(c.pitch_deg),
        "abs_roll_deg": abs(c.roll_deg),
        "log_sharpness": math.log1p(max(c.sharpness, 0.0)),
        "brightness_offset": abs(c.brightness - 0.5),
        "contrast": c.contrast,
        "det_score": c.det_score,
        "embedding_norm": c.embedding_norm if c.embedding_norm is not None else 0.0,
    }


def model_for(model_id: str) -> FittedModel:
    """The quality model fitted for this pack, else the one that does not read the embedder."""
    return FITTED.get(model_id, GENERIC)


def reasons(c: QualityComponents) -> tuple[str, ...]:
    """Each component beyond its stated limit (`quality_fit.REASON_LIMITS`), in a fixed order."""
    found = []
    if abs(c.yaw_deg) > REASON_LIMITS["abs_yaw_deg"] or abs(c.pitch_deg) > REASON_LIMITS["abs_pitch_deg"]:
        found.append(EXTREME_POSE)
    if c.brightness < REASON_LIMITS["brightness"]:
        found.append(LOW_BRIGHTNESS)
    if c.sharpness < REASON_LIMITS["sharpness"]:
        found.append(LOW_SHARPNESS)
    if c.det_score < REASON_LIMITS["det_score"]:
        found.append(LOW_CONFIDENCE)
    if c.inter_eye_px < REASON_LIMITS["inter_eye_px"]:
        found.append(SMALL_BOUNDING_BOX)
    return tuple(found)


def assess(c: QualityComponents, model_id: str) -> tuple[float, tuple[str, ...]]:
    """(unified quality, reasons) of one face."""
    return model_for(model_id).score(feature_values(c)), reasons(c)


def floor_of(level: QualityLevel) -> float | None:
    """The unified-quality floor of a filter level (None: no filter). AUTO is the level the EDC chose."""
    if level == "NONE":
        return None
    if level == "AUTO":
        level = FLOORS["AUTO"]  # type: ignore[assignment]
    return float(FLOORS[level])


def resolved_level(level: QualityLevel) -> str:
    """AUTO named as the level it stands for."""
    return str(FLOORS["AUTO"]) if level == "AUTO" else level


def heuristic_quality(landmarks: list[list[float]], det_score: float) -> float:
    """The score Lineup stored as `quality` before the components existed (kept to compare against in the
    EDC): detection score x eye distance / 40 px (capped at 1) x a frontal factor from the nose's offset."""
    (lx, ly), (rx, ry), (nx, _) = landmarks[0], landmarks[1], landmarks[2]
    eye_distance = math.hypot(rx - lx, ry - ly)
    offset = abs(nx - (lx + rx) / 2) / max(eye_distance, 1e-6)
    frontal = min(1.0, max(0.0, 1.0 - offset))
    return min(1.0, max(0.0, det_score)) * min(1.0, eye_distance / 40.0) * frontal


__all__ = ["MEASURED_ON", "FittedModel", "assess", "floor_of", "heuristic_quality", "model_for", "reasons"]
