"""Calibration records, typed: the threshold that gave a stated FMR on stated data for one model, written
by `lineup audit calibrate` (a JSON file and a calibrations table row) and read by every job that uses it."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.common.errors import UserError
from jobs.common.locations import resolve
from jobs.common.storage import AnyPath, upath, write_atomically

CALIBRATIONS_DIR = "calibrations"


class CalibrationData(BaseModel):
    """What the threshold was measured on."""

    model_config = ConfigDict(extra="allow")

    name: str
    table: str | None = None
    version: int | None = None
    where: str | None = None
    faces: int | None = None
    impostors_within: list[str] = Field(default_factory=list)
    sampled_impostors: bool | None = None
    seed: int | None = None


class CalibrationRecord(BaseModel):
    """One calibration. Keys a newer Lineup writes are kept (`extra="allow"`)."""

    model_config = ConfigDict(extra="allow")

    calibration_id: str
    threshold: float  # on raw cosines, or on normalized scores when `normalization` is set
    target_fmr: float
    measured_fmr: float
    model_id: str
    data: CalibrationData
    measured_fnmr: float | None = None
    false_matches: int | None = None
    impostor_pairs: int | None = None
    genuine_pairs: int | None = None
    resolvable: bool | None = None
    fmr_ci_low: float | None = None
    fmr_ci_high: float | None = None
    fnmr_ci_low: float | None = None
    fnmr_ci_high: float | None = None
    fmr_upper_rule_of_three: float | None = None
    method: str | None = None
    normalization: dict[str, Any] | None = None  # a fair score normalization (`jobs.common.normalization`)
    raw_threshold: float | None = None  # with a normalization: the threshold on raw cosines at the same FMR
    # With matched impostors (`--matched-impostors race,gender`): the threshold holds the target for the
    # worst group among impostor pairs that share those attributes; each group's FMR at it, keyed like
    # "race=1,gender=0"; groups with too few pairs to show the target are named, not used.
    matched_impostors: list[str] | None = None
    worst_group: str | None = None
    group_fmr: dict[str, float] | None = None
    group_impostor_pairs: dict[str, int] | None = None
    groups_unresolved: list[str] | None = None
    run_id: str | None = None
    created_at: str | None = None

    def as_json_dict(self) -> dict[str, Any]:
        """The record as stored; a record that does not normalize has no `normalization` key at all."""
        record = self.model_dump(mode="json")
        optional = ("normalization", "raw_threshold", "matched_impostors", "worst_group", "group_fmr")
        for key in (*optional, "group_impostor_pairs", "groups_unresolved"):
            if record[key] is None:
                del record[key]
        return record

    def to_json(self) -> str:
        return json.dumps(self.as_json_dict(), indent=2, sort_keys=True)


def calibration_path(data_root: AnyPath, calibration_id: str) -> AnyPath:
    return data_root / CALIBRATIONS_DIR / f"{calibration_id}.json"


def write_calibration(data_root: AnyPath, record: CalibrationRecord) -> AnyPath:
    path = calibration_path(data_root, record.calibration_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, record.to_json().encode("utf-8"))
    return path


def load_calibration(reference: str, data_root: AnyPath, key: str) -> CalibrationRecord:
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
    try:
        return CalibrationRecord.model_validate(record)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise UserError(f"{key} {path} is not a valid calibration record: {where}: {first['msg']}") from None


def calibration_record_problem(record: object, file_stem: str) -> str | None:
    """Why a calibration record must not be used, or None. Scores are cosines, so a threshold outside
    [-1, 1] matches everything or nothing; an id that differs from the file name means a copied record.

    >>> calibration_record_problem({"calibration_id": "c1", "threshold": 7.5, "model_id": "m",
    ...     "target_fmr": 1e-3, "measured_fmr": 1e-3, "data": {"name": "utkface-dev"}}, "c1")
    'threshold 7.5 is outside [-1, 1], the range of its scores'
    >>> calibration_record_problem({"calibration_id": "c1", "threshold": 0.5, "model_id": "m",
    ...     "target_fmr": 1e-3, "measured_fmr": 1e-3}, "c1")
    "no ['data']"
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [
        k for k in ("calibration_id", "threshold", "model_id", "target_fmr", "measured_fmr", "data") if k not in record
    ]
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
