"""`lineup demo` on a seeded subset of LFW: the replay table comes from real job runs, each non-mated
person is searched once, the fixed 0.80 threshold gives at least as many false matches as the calibrated
one, and a rerun embeds nothing again."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.common.config import load_config
from jobs.demo.config import DemoConfig
from jobs.demo.job import run_demo

pytestmark = [pytest.mark.data, pytest.mark.slow]


def test_demo_replays_the_2018_test_and_a_rerun_reuses_the_tables(spark, tmp_path: Path, shared_data: Path) -> None:
    config = load_config(
        DemoConfig,
        None,
        [f"spark.data_root={tmp_path / 'data'}", f"demo.data={shared_data}", "demo.people=150", "demo.race_images=200"],
    )
    first = run_demo(config, spark)
    fixed, calibrated = first["replay"]
    assert fixed["threshold"] == 0.8 and fixed["threshold_from"] == "fixed 0.8"
    assert calibrated["threshold"] == pytest.approx(first["calibration"]["threshold"], abs=1e-4)
    assert fixed["non_mated_searches"] == calibrated["non_mated_searches"] == first["plan"]["non_mated_probes"]
    assert fixed["searches_with_false_match"] >= calibrated["searches_with_false_match"]
    assert first["embedded_now"] == {
        "gallery": first["plan"]["gallery_photos"],
        "probes": first["plan"]["mated_probes"] + first["plan"]["non_mated_probes"],
        "calibration": first["plan"]["calibration_photos"],
        "utk_gallery": 100,
        "utk_probes": 100,
    }
    races = first["false_candidates_by_race"]
    assert races["gallery_faces"] == 100 and sum(row["searches"] for row in races["rows"]) == 100
    for row in races["rows"]:
        assert 0 <= row["with_false_raw"] <= row["searches"] and 0 <= row["with_false_fsn"] <= row["searches"]
    no_filter, with_filter = first["probe_filter"]
    assert no_filter["level"] == "NONE" and no_filter["non_mated_not_searched"] == no_filter["mated_not_searched"] == 0
    assert with_filter["non_mated"] == no_filter["non_mated"] and with_filter["mated"] == no_filter["mated"]
    assert with_filter["mated_found"] <= no_filter["mated_found"]  # a probe not searched finds no one
    assert Path(first["outputs"]["report"]).is_file()
    matches = spark.read.format("delta").load(first["outputs"]["matches_table"])
    matches = matches.where(f"run_id = '{first['query_run_id']}'")
    assert (
        matches.select("probe_face_id").distinct().count()
        == fixed["non_mated_searches"] + first["plan"]["mated_probes"]
    )

    again = run_demo(config, spark)
    assert again["embedded_now"] == {"gallery": 0, "probes": 0, "calibration": 0, "utk_gallery": 0, "utk_probes": 0}
    assert [row["non_mated_searches"] for row in again["replay"]] == [
        row["non_mated_searches"] for row in first["replay"]
    ]
