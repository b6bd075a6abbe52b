"""The no-JVM reading of docs/jobs/query.md: a Delta table written and read by delta-rs, queried in SQL by DuckDB over
the Arrow dataset (no Spark, no JVM, nothing fetched)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake


def test_duckdb_sql_over_a_delta_table(tmp_path: Path) -> None:
    rows = pa.table(
        {
            "gallery_subject_id": ["a", "a", "b", "c"],
            "score": pa.array([0.91, 0.95, 0.7, 0.99], pa.float32()),
            "above_threshold": [True, True, False, True],
        }
    )
    write_deltalake(str(tmp_path / "matches"), rows)
    matches = DeltaTable(str(tmp_path / "matches")).to_pyarrow_dataset()  # noqa: F841 - read by name in SQL
    result = duckdb.sql(
        "SELECT gallery_subject_id, count(*) AS candidates, round(max(score)::DOUBLE, 2) AS best "
        "FROM matches WHERE above_threshold GROUP BY 1 ORDER BY best DESC"
    ).fetchall()
    assert result == [("c", 1, 0.99), ("a", 2, 0.95)]
