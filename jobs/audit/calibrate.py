"""`lineup audit calibrate`: the threshold that gives a target FMR on stated labelled data, stored as a
calibration record (JSON file and calibrations table) with everything that qualifies it."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.audit.config import AuditConfig
from jobs.audit.identification import check_group_by, group_of
from jobs.audit.load import Labelled, load_labelled
from jobs.audit.metrics import bootstrap_rates, operating_point, point_at
from jobs.audit.one_to_one import make_pairs
from jobs.common.calibrations import CalibrationData, CalibrationRecord, write_calibration
from jobs.common.commits import append_with_retries
from jobs.common.errors import UserError
from jobs.common.fmr import worst_group_threshold
from jobs.common.normalization import METHOD, learn_fsn
from jobs.common.results import CalibrationResult
from jobs.common.runs import RunRecord, delta_version, run_job
from jobs.common.schema import CALIBRATIONS_DDL
from jobs.common.timing import Phases

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from jobs.audit.pairs import PairSet

log = logging.getLogger(__name__)


def run_calibrate(
    config: AuditConfig,
    target_fmr: float,
    spark: SparkSession | None = None,
    normalization: str | None = None,
    clusters: int = 20,
    matched_impostors: list[str] | None = None,
) -> CalibrationResult:
    """Store the threshold that gives `target_fmr` on the labelled data, with everything that qualifies it.

    With `normalization="fsn"` the record also holds a fair score normalization learnt from the data's
    impostor pairs (no demographic label is read) and its threshold applies to normalized scores.
    With `matched_impostors=["race", "gender"]` impostor pairs are drawn within those groups and the
    threshold holds the target for the worst group (each group's FMR is recorded).
    """
    if matched_impostors:
        labelled = config.audit.labelled.model_copy(update={"impostors_within": list(matched_impostors)})
        config = config.model_copy(update={"audit": config.audit.model_copy(update={"labelled": labelled})})

    if not config.audit.labelled.faces_table:
        raise UserError("calibrate needs audit.labelled.faces_table (labelled faces to draw impostor pairs from)")
    if normalization not in (None, METHOD):
        raise UserError(f"--normalization {normalization}: the one method Lineup has is {METHOD!r}")
    params = {**config.audit.model_dump(mode="json"), "target_fmr": target_fmr, "normalization": normalization}
    params["matched_impostors"] = matched_impostors
    if normalization:
        params["clusters"] = clusters

    def body(spark: SparkSession, record: RunRecord, phases: Phases) -> dict[str, Any]:
        with phases.phase("calibrate"):
            return _calibrate(config, spark, record, target_fmr, clusters if normalization else None)

    return run_job("audit-calibrate", config, spark, params, body, CalibrationResult)


def _calibrate(
    config: AuditConfig, spark: SparkSession, record: RunRecord, target_fmr: float, clusters: int | None
) -> dict[str, Any]:
    labelled = load_labelled(spark, config)
    record.add_input("labelled_faces", labelled.table, labelled.version)
    pairs, scores = make_pairs(labelled, config)
    if not (~pairs.genuine).any():
        raise UserError(f"{labelled.name}: no impostor pairs to calibrate on")
    normalization, raw_threshold = None, None
    if clusters is not None:
        normalization, raw_threshold, scores = _learn_normalization(
            labelled, pairs, scores, clusters, target_fmr, config.audit.labelled.seed
        )
    genuine, impostor = scores[pairs.genuine], scores[~pairs.genuine]
    matched = config.audit.labelled.impostors_within
    worst = _worst_group(labelled, pairs, impostor, matched, target_fmr) if matched else {}
    if worst:
        point = point_at(genuine, impostor, worst.pop("threshold"), target_fmr)
    else:
        point = operating_point(genuine, impostor, target_fmr)
    if not point.resolvable:
        log.warning(
            "%d impostor pairs cannot measure FMR %g: the stored threshold sits above every impostor score",
            point.impostor_pairs,
            target_fmr,
        )
    calibration = CalibrationRecord(
        calibration_id=f"cal-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}",
        threshold=point.threshold,
        target_fmr=target_fmr,
        measured_fmr=point.fmr,
        measured_fnmr=point.fnmr if len(genuine) else None,
        false_matches=point.false_matches,
        impostor_pairs=point.impostor_pairs,
        genuine_pairs=point.genuine_pairs,
        resolvable=point.resolvable,
        **bootstrap_rates(genuine, impostor, point.threshold, config.audit.bootstrap_rounds, 3),
        model_id=labelled.model_id,
        data=_data_of(labelled, config, pairs.sampled_impostors),
        method=(
            f"lowest threshold with FMR <= target in every group of impostor pairs matched on {'+'.join(matched)}"
            if worst
            else "lowest threshold with FMR <= target (score >= threshold matches)"
        )
        + (" on fsn-normalized scores" if normalization else ""),
        **worst,
        normalization=normalization,
        raw_threshold=raw_threshold,
        run_id=record.run_id,
        created_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    path = write_calibration(config.spark.resolved_data_root(), calibration)
    table = config.calibrations_table_path()
    append_with_retries(spark.createDataFrame([_table_row(calibration)], CALIBRATIONS_DDL), table)
    record.add_output("calibrations", table, delta_version(spark, table))
    record.threshold, record.threshold_source = point.threshold, f"calibration:{calibration.calibration_id}"
    record.counts = {"genuine_pairs": point.genuine_pairs, "impostor_pairs": point.impostor_pairs}
    return {
        **{k: v for k, v in calibration.as_json_dict().items() if k != "run_id"},
        "outputs": {"calibration_file": str(path), "calibrations_table": table},
    }


def _worst_group(
    labelled: Labelled, pairs: PairSet, impostor: np.ndarray, matched: list[str], target_fmr: float
) -> dict[str, Any]:
    """The threshold that holds the target for the worst matched group, and what qualifies it."""
    check_group_by(["+".join(matched)], labelled.attributes, labelled.name)
    labels = np.array([group_of(a, matched) for a in labelled.attributes], dtype=object)
    groups = labels[pairs.a[~pairs.genuine]]  # both faces of a matched impostor pair share the group
    threshold, worst, rates, unresolved = worst_group_threshold(impostor, groups, target_fmr)
    if worst is None:
        raise UserError(
            f"{labelled.name}: no group of impostor pairs matched on {'+'.join(matched)} is large enough to show "
            f"FMR {target_fmr:g} (each needs {int(np.ceil(1 / target_fmr)):,} pairs): raise the target or add faces"
        )
    log.info(
        "matched impostors: group %s sets the threshold %.6f; %d group(s) too small", worst, threshold, len(unresolved)
    )
    return {
        "threshold": threshold,
        "matched_impostors": list(matched),
        "worst_group": worst,
        "group_fmr": rates,
        "group_impostor_pairs": {g: int((groups == g).sum()) for g in sorted(set(groups.tolist()))},
        "groups_unresolved": unresolved,
    }


def _data_of(labelled: Labelled, config: AuditConfig, sampled_impostors: bool) -> CalibrationData:
    settings = config.audit.labelled
    return CalibrationData(
        name=labelled.name,
        table=labelled.table,
        version=labelled.version,
        where=settings.where,
        faces=len(labelled.subjects),
        impostors_within=settings.impostors_within,
        sampled_impostors=sampled_impostors,
        seed=settings.seed,
    )


def _learn_normalization(
    labelled: Labelled, pairs: PairSet, scores: np.ndarray, clusters: int, target_fmr: float, seed: int
) -> tuple[dict[str, Any], float, np.ndarray]:
    """(normalization record, raw threshold at the target, the pairs' normalized scores)."""
    impostor = ~pairs.genuine
    if not 1 <= clusters <= len(labelled.vectors):
        raise UserError(f"--clusters {clusters}: give 1 to {len(labelled.vectors)} (the faces calibrated on)")
    fsn = learn_fsn(
        labelled.vectors,
        pairs.a[impostor],
        pairs.b[impostor],
        scores[impostor],
        clusters,
        target_fmr,
        seed,
    )
    normalized = fsn.normalize_pairs(labelled.vectors, pairs.a, pairs.b, scores)
    log.info(
        "fsn: %d clusters, offsets %.4f..%.4f from the global threshold", clusters, fsn.offsets.min(), fsn.offsets.max()
    )
    return fsn.as_record(), fsn.global_threshold, normalized


def _table_row(calibration: CalibrationRecord) -> dict[str, Any]:
    """The calibrations table's row for a record (the record itself as JSON beside its key numbers)."""
    return {
        "calibration_id": calibration.calibration_id,
        "threshold": calibration.threshold,
        "target_fmr": calibration.target_fmr,
        "measured_fmr": calibration.measured_fmr,
        "measured_fnmr": calibration.measured_fnmr,
        "model_id": calibration.model_id,
        "data_name": calibration.data.name,
        "data_table": calibration.data.table,
        "data_version": calibration.data.version,
        "genuine_pairs": calibration.genuine_pairs,
        "impostor_pairs": calibration.impostor_pairs,
        "resolvable": calibration.resolvable,
        "record": calibration.to_json(),
        "created_at": dt.datetime.now(dt.UTC),
    }
