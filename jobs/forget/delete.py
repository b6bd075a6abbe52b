"""Deleting a person's rows from every table forget is given, by the selector itself (subjects and paths by their
sha256, so Delta's log names no one), until a round finds nothing committed beside it."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from jobs.common.commits import with_commit_retries
from jobs.common.delta import is_delta_table, latest_version
from jobs.common.erasures import ERASED, id_digest
from jobs.common.errors import TransientError
from jobs.forget.config import ForgetConfig
from jobs.forget.plan import ErasedSet, find_rows, selector_condition

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession

log = logging.getLogger(__name__)


def table_roles(config: ForgetConfig) -> list[tuple[str, str]]:
    settings = config.forget
    roles = [("faces", t) for t in config.faces_table_paths()] + [
        ("probe_faces", t) for t in config.resolved(settings.probe_tables)
    ]
    roles += [("matches", t) for t in config.resolved(settings.matches_tables)]
    roles += [("identities", t) for t in config.resolved(settings.identities_tables)]
    return roles + [("pair_scores", t) for t in config.resolved(settings.pair_scores_tables)]


def _condition(
    role: str, erased: ErasedSet, by_subject: bool, cutoff: dt.datetime | None, selected: Any = None
) -> Column:
    """Which rows of a table of this role hold the person's data (or are past retention). `selected`
    (faces-table layout) is the selector itself, so rows committed after planning are matched too."""
    from pyspark.sql import functions as F

    faces, images, subjects = sorted(erased.face_ids), sorted(erased.image_ids), sorted(erased.subject_ids)
    never = F.lit(False)
    if role in ("faces", "probe_faces"):
        condition = F.col("face_id").isin(faces) | F.col("image_id").isin(images) if faces or images else never
        if selected is not None:
            condition = condition | selected
        # `erased` rows hold nothing of the person: they are what keeps the content from coming back
        condition = condition & (F.col("status") != F.lit(ERASED))
        time_column = "embedded_at" if role == "probe_faces" else None
    elif role in ("matches", "identities"):
        face_column = "gallery_face_id" if role == "matches" else "best_gallery_face_id"
        condition = (
            F.col("probe_face_id").isin(faces) | F.col(face_column).isin(faces) | F.col("probe_image_id").isin(images)
        )
        if by_subject and subjects:
            # By digest: Delta records a DELETE's condition in its log, which an erasure cannot purge.
            digests = sorted(id_digest(subject) for subject in subjects)
            condition = (
                condition
                | F.sha2(F.col("probe_subject_id"), 256).isin(digests)
                | F.sha2(F.col("gallery_subject_id"), 256).isin(digests)
            )
        time_column = "queried_at"
    else:
        condition = F.col("a_face_id").isin(faces) | F.col("b_face_id").isin(faces)
        time_column = None
    if cutoff is not None and time_column is not None:
        condition = condition | (F.col(time_column) < F.lit(cutoff))
    return condition


MAX_ROUNDS = 5  # deletes of rows committed beside the erasure before it gives up (exit 3: rerun it)


def delete_converged(
    spark: SparkSession, config: ForgetConfig, erased: ErasedSet, values: list[str]
) -> list[dict[str, Any]]:
    """Delete the person's rows everywhere, then look again by the selector: rows a concurrent embed
    committed meanwhile are found and deleted in the next round, until a round finds none."""
    selector = config.forget.selector
    selected = selector_condition(selector, values) if selector else None
    tables: list[dict[str, Any]] = []
    for round_number in range(MAX_ROUNDS):
        done = delete_everywhere(spark, config, erased, selected)
        tables = done if not tables else merged_rounds(tables, done)
        if selector is None:
            return tables
        tables_with_faces = config.faces_table_paths() + config.resolved(config.forget.probe_tables)
        late = find_rows(spark, tables_with_faces, selector, values)
        if not late.face_ids:
            return tables
        log.info("forget: round %d: %d row(s) committed beside the erasure, deleting them", round_number + 1, len(late))
        erased.update(late)
    raise TransientError(
        f"forget: rows of the erased selector kept being committed through {MAX_ROUNDS} rounds of deletes "
        "(an embed without the erasure register running beside it?); rerun lineup forget"
    )


def merged_rounds(first: list[dict[str, Any]], later: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per table: the first round's version before, the last round's version after, rows summed."""
    later_of = {(t["role"], t["path"]): t for t in later}
    merged = []
    for entry in first:
        last = later_of.pop((entry["role"], entry["path"]), None)
        rows = entry["rows_deleted"] + (last["rows_deleted"] if last else 0)
        merged.append({**entry, "version_after": (last or entry)["version_after"], "rows_deleted": rows})
    return merged + list(later_of.values())


def delete_everywhere(
    spark: SparkSession, config: ForgetConfig, erased: ErasedSet, selected: Column | None = None
) -> list[dict[str, Any]]:
    from delta.tables import DeltaTable

    hours = config.older_than_hours()
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours) if hours is not None else None
    by_subject = config.forget.selector is not None and config.forget.selector.kind == "subject_ids"
    done = []
    for role, table in table_roles(config):
        if not is_delta_table(spark, table):
            continue
        condition = _condition(role, erased, by_subject, cutoff, selected)
        before = latest_version(spark, table)
        matching = spark.read.format("delta").load(table).where(condition).count()
        if matching:  # a DELETE that matches nothing would still add a version

            def delete(table: str = table, condition: Column = condition) -> None:
                DeltaTable.forPath(spark, table).delete(condition)

            with_commit_retries(delete, table)
        after = latest_version(spark, table)
        log.info("forget: %s %s: %d row(s) deleted (v%d -> v%d)", role, table, matching, before, after)
        done.append(
            {"role": role, "path": table, "version_before": before, "version_after": after, "rows_deleted": matching}
        )
    return done


def anything_names(spark: SparkSession, config: ForgetConfig, erased: ErasedSet) -> bool:
    """Whether any derived table still names the selected subjects (a rerun after the faces were deleted)."""
    by_subject = config.forget.selector is not None and config.forget.selector.kind == "subject_ids"
    for role, table in table_roles(config):
        if role in ("matches", "identities") and by_subject and is_delta_table(spark, table):
            if spark.read.format("delta").load(table).where(_condition(role, erased, True, None)).limit(1).count():
                return True
    return False
