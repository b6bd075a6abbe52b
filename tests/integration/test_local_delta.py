from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_local_session_writes_merges_and_time_travels(spark, tmp_path: Path) -> None:
    from delta.tables import DeltaTable

    path = str(tmp_path / "faces")
    spark.createDataFrame([(1, "a"), (2, "b")], "face_id long, subject_id string").write.format("delta").save(path)
    updates = spark.createDataFrame([(2, "B"), (3, "c")], "face_id long, subject_id string")
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(updates.alias("u"), "t.face_id = u.face_id")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )
    latest = sorted(tuple(r) for r in spark.read.format("delta").load(path).collect())
    first = sorted(tuple(r) for r in spark.read.format("delta").option("versionAsOf", 0).load(path).collect())
    assert latest == [(1, "a"), (2, "B"), (3, "c")]
    assert first == [(1, "a"), (2, "b")]


def test_test_session_is_small_and_local(spark) -> None:
    assert spark.sparkContext.master == "local[2,4]"  # local runs retry failed tasks
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert spark.conf.get("spark.ui.enabled") == "false"
