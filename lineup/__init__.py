"""Lineup's Python API: one function per job, for notebooks (Databricks, Jupyter) and scripts.

Each takes the same settings as the job's YAML file (a config object, a dict of its sections, or the path
of a YAML file), `--set`'s dotted keys as keyword overrides (`**{"embed.input.path": "/photos"}`) and an
optional existing SparkSession, and returns the job's typed result: the same runs row, tables and JSON
line as `lineup <job>` on the command line, which is a thin layer over these functions.
"""

from jobs.common.results import (
    AuditResult,
    CalibrationResult,
    CompareResult,
    EmbedResult,
    ForgetResult,
    IndexResult,
    JobResult,
    QueryResult,
)
from lineup.api import audit, calibrate, compare, embed, forget, index, query

__all__ = [
    "AuditResult",
    "CalibrationResult",
    "CompareResult",
    "EmbedResult",
    "ForgetResult",
    "IndexResult",
    "JobResult",
    "QueryResult",
    "audit",
    "calibrate",
    "compare",
    "embed",
    "forget",
    "index",
    "query",
]
