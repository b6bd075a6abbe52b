"""What a job returns: a typed result, built once by `run_job` from the job's summary.

Every result has the fields every job has (`job`, `run_id`, `status`, `outputs`, `timings_s`) and a
typed field for each output a caller chains on (a faces table's version, an index folder, a matches
table). It is also a read-only mapping of the whole summary, which is exactly the CLI's JSON line, so
`result["by_status"]` reads what `lineup embed` prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="JobResult")


@dataclass(frozen=True)
class JobResult(Mapping[str, Any]):
    """The result of one job run (`status` is always "ok": a failed run raises)."""

    job: str
    run_id: str
    status: str
    outputs: Mapping[str, Any]
    timings_s: Mapping[str, float]
    summary: Mapping[str, Any] = field(repr=False, compare=False)

    # The output keys a subclass promises (`from_summary` refuses a summary without them).
    required_outputs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_summary(cls: type[R], summary: Mapping[str, Any]) -> R:
        """The result of a job's summary.

        >>> r = IndexResult.from_summary({"job": "index", "run_id": "r1", "status": "ok",
        ...     "outputs": {"index_dir": "/x", "runs_table": "/t", "runs_version": 3}, "timings_s": {}})
        >>> r.index_dir, r.runs_version, r["outputs"]["index_dir"]
        ('/x', 3, '/x')
        """
        outputs = dict(summary.get("outputs") or {})
        missing = [key for key in cls.required_outputs if key not in outputs]
        if missing:
            raise ValueError(f"a {cls.__name__} needs outputs {missing}; the job returned {sorted(outputs)}")
        return cls(
            job=str(summary["job"]),
            run_id=str(summary["run_id"]),
            status=str(summary.get("status", "ok")),
            outputs=outputs,
            timings_s=dict(summary.get("timings_s") or {}),
            summary=dict(summary),
        )

    @property
    def runs_table(self) -> str:
        return str(self.outputs["runs_table"])

    @property
    def runs_version(self) -> int:
        return int(self.outputs["runs_version"])

    def to_json(self) -> str:
        """The CLI's JSON line."""
        return json.dumps(self.summary, default=str, sort_keys=False)

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.summary)

    def __len__(self) -> int:
        return len(self.summary)


@dataclass(frozen=True)
class EmbedResult(JobResult):
    required_outputs: ClassVar[tuple[str, ...]] = ("faces_table", "faces_table_version")

    @property
    def faces_table(self) -> str:
        return str(self.outputs["faces_table"])

    @property
    def faces_table_version(self) -> int:
        return int(self.outputs["faces_table_version"])

    @property
    def by_status(self) -> Mapping[str, int]:
        return dict(self.summary.get("by_status") or {})


@dataclass(frozen=True)
class IndexResult(JobResult):
    required_outputs: ClassVar[tuple[str, ...]] = ("index_dir",)

    @property
    def index_dir(self) -> str:
        return str(self.outputs["index_dir"])


@dataclass(frozen=True)
class QueryResult(JobResult):
    required_outputs: ClassVar[tuple[str, ...]] = ("matches_table", "matches_version")

    @property
    def matches_table(self) -> str:
        return str(self.outputs["matches_table"])

    @property
    def matches_version(self) -> int:
        return int(self.outputs["matches_version"])

    @property
    def identities_table(self) -> str | None:
        return self.outputs.get("identities_table")


@dataclass(frozen=True)
class CompareResult(JobResult):
    required_outputs: ClassVar[tuple[str, ...]] = ("pair_scores_table", "pair_scores_version")

    @property
    def pair_scores_table(self) -> str:
        return str(self.outputs["pair_scores_table"])


@dataclass(frozen=True)
class AuditResult(JobResult):
    required_outputs: ClassVar[tuple[str, ...]] = ("metrics_table", "report")

    @property
    def metrics_table(self) -> str:
        return str(self.outputs["metrics_table"])

    @property
    def report(self) -> str:
        return str(self.outputs["report"])


@dataclass(frozen=True)
class CalibrationResult(JobResult):
    required_outputs: ClassVar[tuple[str, ...]] = ("calibration_file", "calibrations_table")

    @property
    def calibration_id(self) -> str:
        return str(self.summary["calibration_id"])

    @property
    def threshold(self) -> float:
        return float(self.summary["threshold"])


@dataclass(frozen=True)
class ForgetResult(JobResult):
    @property
    def erasure_id(self) -> str | None:
        return self.summary.get("erasure_id")

    @property
    def matched(self) -> int:
        return int(self.summary.get("matched") or 0)
