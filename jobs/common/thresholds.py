"""Thresholds are never hidden: an explicit value, or a calibration record (written by
`lineup audit calibrate`) that says which FMR it gives, on which data, for which model."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, model_validator

from jobs.common.calibrations import CalibrationRecord, load_calibration
from jobs.common.config import StrictModel
from jobs.common.errors import UserError
from jobs.common.normalization import METHOD, VERSION, Normalization, normalization_from_record
from jobs.common.storage import AnyPath


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
    calibration: CalibrationRecord | None = None
    # When set, `value` applies to normalized scores (the raw cosine is still kept beside them).
    normalization: Normalization | None = None

    @property
    def normalization_label(self) -> str | None:
        """What the normalized scores were normalized with, for tables: `fsn-v1:<calibration_id>`."""
        if self.normalization is None or self.calibration is None:
            return None
        return f"{METHOD}-v{VERSION}:{self.calibration.calibration_id}"

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
            f"threshold {self.value:.6f}{scores} from calibration {c.calibration_id}: target FMR "
            f"{c.target_fmr:g}, measured FMR {c.measured_fmr:.3g} on {c.impostor_pairs} impostor pairs of "
            f"{c.data.name}"
        )


@dataclass(frozen=True)
class ErrorBudget:
    """The odds that a search's candidate is a stranger, stated beside every candidate: the gallery size
    searched, the threshold and where it came from, the false-match rate that threshold was measured at
    (and on which data), and the false candidates a search should expect at it (gallery faces x FMR)."""

    gallery_size: int
    gallery_subjects: int
    threshold: float | None
    threshold_source: str
    threshold_fmr: float | None
    threshold_fmr_data: str | None
    expected_false_candidates: float | None

    @classmethod
    def of(cls, threshold: Threshold, gallery_size: int, gallery_subjects: int) -> ErrorBudget:
        """>>> budget = ErrorBudget.of(Threshold(0.9, "explicit"), 4611, 3728)
        >>> budget.threshold_fmr is None, budget.expected_false_candidates is None
        (True, True)
        """
        calibration = threshold.calibration
        fmr = calibration.measured_fmr if calibration is not None and threshold.value is not None else None
        return cls(
            gallery_size=gallery_size,
            gallery_subjects=gallery_subjects,
            threshold=threshold.value,
            threshold_source=threshold.source,
            threshold_fmr=fmr,
            threshold_fmr_data=calibration.data.name if calibration is not None else None,
            expected_false_candidates=None if fmr is None else gallery_size * fmr,
        )

    def describe(self) -> str:
        """One sentence for logs and summaries."""
        if self.threshold is None:
            return f"{self.gallery_size:,} gallery faces searched, no threshold: every candidate may be a stranger"
        if self.threshold_fmr is None:
            return (
                f"{self.gallery_size:,} gallery faces searched at an explicit threshold {self.threshold:g} whose "
                "false-match rate nobody measured: calibrate it (`lineup audit calibrate`) to know the odds"
            )
        return (
            f"{self.gallery_size:,} gallery faces ({self.gallery_subjects:,} subjects) searched at threshold "
            f"{self.threshold:.6f}, measured FMR {self.threshold_fmr:.3g} on {self.threshold_fmr_data}: a search "
            f"should expect {self.expected_false_candidates:.3g} false candidates (gallery faces x FMR)"
        )


def resolve_threshold(settings: ThresholdSettings, model_id: str, data_root: AnyPath, key: str) -> Threshold:
    """The threshold a run uses; refuses a calibration measured for another model."""
    if settings.value is not None:
        return Threshold(float(settings.value), "explicit")
    if settings.calibration is None:
        return Threshold(None, "none")
    record = load_calibration(settings.calibration, data_root, f"{key}.calibration")
    if record.model_id != model_id:
        raise UserError(
            f"{key}.calibration {record.calibration_id} was measured for model {record.model_id}, but this run "
            f"uses {model_id}: calibrate this model with `lineup audit calibrate`"
        )
    normalization = None
    if record.normalization is not None:
        try:
            normalization = normalization_from_record(record.normalization)
        except ValueError as error:
            raise UserError(f"{key}.calibration {record.calibration_id}: {error}; recalibrate it") from None
    return Threshold(record.threshold, f"calibration:{record.calibration_id}", record, normalization)
