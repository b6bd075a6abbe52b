"""One function per job. `config` is what `--conf` gives the command line (a config object, a dict of
the YAML's sections, a YAML path, or None for the defaults); `overrides` are `--set`'s dotted keys with
Python values; `spark` an existing session (a notebook's), else one is started as the CLI starts it.

The examples run on a small world of LFW photographs that `conftest.py` builds for the doctests (`world`:
its folders, tables and index; `spark`: the test run's session).
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

from pyspark.sql import SparkSession

from jobs.audit.config import AuditConfig
from jobs.audit.job import run_audit, run_calibrate
from jobs.common.config import config_from
from jobs.common.results import (
    AuditResult,
    CalibrationResult,
    CompareResult,
    EmbedResult,
    ForgetResult,
    IndexResult,
    QueryResult,
)
from jobs.compare.config import CompareConfig
from jobs.compare.job import run_compare
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from jobs.forget.config import ForgetConfig
from jobs.forget.job import run_forget
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.query.config import QueryConfig
from jobs.query.job import run_query

Settings = Mapping[str, Any] | str | PathLike[str] | None


def embed(config: EmbedConfig | Settings = None, *, spark: SparkSession | None = None, **overrides: Any) -> EmbedResult:
    """Embed an image archive into a faces table (`lineup embed`).

    >>> faces = embed({"embed": {"input": {"path": world.gallery_photos}, "table_path": world.new_table(),
    ...     "labels": {"subject_from_path": "([^/]+)/[^/]+$"}}}, spark=spark)
    >>> faces.by_status["ok"] >= 10, faces.faces_table_version
    (True, 1)
    """
    return run_embed(config_from(EmbedConfig, config, overrides), spark)


def index(config: IndexConfig | Settings = None, *, spark: SparkSession | None = None, **overrides: Any) -> IndexResult:
    """Build (or, with `index.update=True`, update) the sharded FAISS index of a faces table (`lineup index`).

    >>> built = index(**{"index.faces_table": world.gallery_faces, "index.index_dir": world.new_folder()},
    ...     spark=spark)
    >>> built["factory"], built["vectors"] == world.gallery_face_count
    ('Flat', True)
    """
    return run_index(config_from(IndexConfig, config, overrides), spark)


def query(config: QueryConfig | Settings = None, *, spark: SparkSession | None = None, **overrides: Any) -> QueryResult:
    """Search probes against an index; write matches and identities (`lineup query`).

    >>> found = query(**{"query.probes.faces_table": world.probe_faces, "query.index_dir": world.index_dir,
    ...     "query.k": 3, "query.matches_table": world.new_table(), "query.identities_table": world.new_table()},
    ...     spark=spark)
    >>> rows = spark.read.format("delta").load(found.matches_table).where("rank = 1").count()
    >>> rows == world.probe_face_count
    True
    """
    return run_query(config_from(QueryConfig, config, overrides), spark)


def compare(
    config: CompareConfig | Settings = None, *, spark: SparkSession | None = None, **overrides: Any
) -> CompareResult:
    """Score pairs of images or of face ids (`lineup compare`).

    >>> scored = compare(**{"compare.pairs.path": world.pairs_file, "compare.pairs.kind": "images",
    ...     "compare.scores_table": world.new_table()}, spark=spark)
    >>> scored["pairs_ok"]
    2
    """
    return run_compare(config_from(CompareConfig, config, overrides), spark)


def calibrate(
    config: AuditConfig | Settings = None,
    *,
    target_fmr: float,
    normalization: str | None = None,
    clusters: int = 20,
    matched_impostors: list[str] | None = None,
    spark: SparkSession | None = None,
    **overrides: Any,
) -> CalibrationResult:
    """Store the threshold that gives `target_fmr` on labelled faces (`lineup audit calibrate`); with
    `matched_impostors=["race", "gender"]`, for the worst group among impostor pairs sharing those.

    >>> calibration = calibrate(target_fmr=1e-2, spark=spark, **{"audit.labelled.faces_table": world.gallery_faces,
    ...     "audit.calibrations_table": world.new_table()})
    >>> calibration.calibration_id.startswith("cal-"), -1.0 <= calibration.threshold <= 1.0
    (True, True)
    """
    resolved = config_from(AuditConfig, config, overrides)
    return run_calibrate(
        resolved, target_fmr, spark, normalization=normalization, clusters=clusters, matched_impostors=matched_impostors
    )


def audit(config: AuditConfig | Settings = None, *, spark: SparkSession | None = None, **overrides: Any) -> AuditResult:
    """Measure error rates on stated data; write the metrics table and an HTML report (`lineup audit`).

    >>> audited = audit(spark=spark, **{"audit.labelled.faces_table": world.gallery_faces,
    ...     "audit.metrics_table": world.new_table(), "audit.report_dir": world.new_folder()})
    >>> audited.report.endswith(".html")
    True
    """
    return run_audit(config_from(AuditConfig, config, overrides), spark)


def forget(
    config: ForgetConfig | Settings = None, *, spark: SparkSession | None = None, **overrides: Any
) -> ForgetResult:
    """Erase a person from every configured table and index, and register the erasure (`lineup forget`).

    >>> faces = world.new_table()
    >>> _ = embed(spark=spark, **{"embed.input.path": world.gallery_photos, "embed.table_path": faces,
    ...     "embed.labels.subject_from_path": "([^/]+)/[^/]+$"})
    >>> erased = forget(spark=spark, **{"forget.faces_tables": [faces], "forget.selector.kind": "subject_ids",
    ...     "forget.selector.values": [world.forgotten_subject], "erasures_table": world.new_table()})
    >>> erased.matched > 0, spark.read.format("delta").load(faces).where(
    ...     f"subject_id = '{world.forgotten_subject}'").count()
    (True, 0)
    """
    return run_forget(config_from(ForgetConfig, config, overrides), spark)
