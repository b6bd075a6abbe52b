"""Thresholds are never hidden: an explicit value, or a calibration record (written by
`lineup audit calibrate`) that says which FMR it gives, on which data, for which model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from jobs.common.config import StrictModel
from jobs.common.errors import UserError
from jobs.common.locations import resolve
from jobs.common.normalization import METHOD, VERSION, Normalization, normalization_from_record
from jobs.common.storage import AnyPath, upath, write_atomically

CALIBRATIONS_DIR = "calibrations"


class ThresholdSettings(StrictModel):
    value: float | None = Field(None, ge=-1.0, le=1.0, description="an explicit cosine threshold")
    calibration: str | None = Field(
        None, description="a calibration record: its JSON file, or its calibration_id under <data_root>/calibrations"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ThresholdSettings:
        if self.value is not None and self.calibration is not None:
            raise ValueError("give threshold.value or threshold.calibration, not both")
        return self


@dataclass(frozen=True)
class Threshold:
    value: float | None
    source: str  # "explicit", "calibration:<id>" or "none"
    calibration: dict[str, Any] | None = None
    # When set, `value` applies to normalized scores (the raw cosine is still kept beside them).
    normalization: Normalization | None = None

    @property
    def normalization_label(self) -> str | None:
        """What the normalized scores were normalized with, for tables: `fsn-v1:<calibration_id>`."""
        if self.normalization is None or self.calibration is None:
            return None
        return f"{METHOD}-v{VERSION}:{self.calibration['calibration_id']}"

    def describe(self) -> str:
        if self.value is None:
            return "no threshold given: above_threshold is null (set threshold.value or threshold.calibration)"
        if self.calibration is None:
            return f"explicit threshold {self.value}"
        c = self.calibration
        scores = (
            f" on {METHOD}-normalized scores ({len(self.normalization.offsets)} clusters)" if self.normalization else ""
        )
        return (
            f"threshold {self.value:.6f}{scores} from calibration {c['calibration_id']}: target FMR "
            f"{c['target_fmr']:g}, measured FMR {c['measured_fmr']:.3g} on {c['impostor_pairs']} impostor pairs of "
            f"{c['data']['name']}"
        )


def calibration_path(data_root: AnyPath, calibration_id: str) -> AnyPath:
    return data_root / CALIBRATIONS_DIR / f"{calibration_id}.json"


def write_calibration(data_root: AnyPath, record: dict[str, Any]) -> AnyPath:
    path = calibration_path(data_root, record["calibration_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(record, indent=2, sort_keys=True).encode("utf-8"))
    return path


def load_calibration(reference: str, data_root: AnyPath, key: str) -> dict[str, Any]:
    candidate = upath(resolve(reference))
    path = candidate if candidate.suffix == ".json" or candidate.is_file() else calibration_path(data_root, reference)
    if not path.is_file():
        raise UserError(
            f"{key} {reference}: no calibration record at {path}; run `lineup audit calibrate` or give a record's path"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{key} {path} is not a calibration record ({error})") from None
    problem = calibration_record_problem(record, path.stem)
    if problem:
        raise UserError(f"{key} {path} is not a valid calibration record: {problem}; recalibrate it")
    return record


def calibration_record_problem(record: object, file_stem: str) -> str | None:
    """Why a calibration record must not be used, or None. Scores are cosines, so a threshold outside
    [-1, 1] matches everything or nothing; an id that differs from the file name means a copied record.

    >>> calibration_record_problem({"calibration_id": "c1", "threshold": 7.5, "model_id": "m",
    ...     "target_fmr": 1e-3, "measured_fmr": 1e-3}, "c1")
    'threshold 7.5 is outside [-1, 1], the range of its scores'
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [k for k in ("calibration_id", "threshold", "model_id", "target_fmr", "measured_fmr") if k not in record]
    if missing:
        return f"no {missing}"
    threshold = record["threshold"]
    # A normalized score is a cosine shifted by at most 2 (the offsets are cosine differences).
    bound = 3.0 if "normalization" in record else 1.0
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not -bound <= threshold <= bound:
        return f"threshold {threshold!r} is outside [-{bound:g}, {bound:g}], the range of its scores"
    if not isinstance(record["model_id"], str) or not record["model_id"]:
        return "model_id is empty"
    if record["calibration_id"] != file_stem:
        return f"its calibration_id {record['calibration_id']!r} is not its file name {file_stem!r}"
    return None


def resolve_threshold(settings: ThresholdSettings, model_id: str, data_root: AnyPath, key: str) -> Threshold:
    """The threshold a run uses; refuses a calibration measured for another model."""
    if settings.value is not None:
        return Threshold(float(settings.value), "explicit")
    if settings.calibration is None:
        return Threshold(None, "none")
    record = load_calibration(settings.calibration, data_root, f"{key}.calibration")
    if record["model_id"] != model_id:
        raise UserError(
            f"{key}.calibration {record['calibration_id']} was measured for model {record['model_id']}, but this run "
            f"uses {model_id}: calibrate this model with `lineup audit calibrate`"
        )
    normalization = None
    if "normalization" in record:
        try:
            normalization = normalization_from_record(record["normalization"])
        except ValueError as error:
            raise UserError(f"{key}.calibration {record['calibration_id']}: {error}; recalibrate it") from None
    return Threshold(float(record["threshold"]), f"calibration:{record['calibration_id']}", record, normalization)
