"""The compare job: image pairs scored like the pipeline scores them, face-id pairs from a faces table,
and every pair that cannot be scored kept as a row saying which side failed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from jobs.common.config import load_config
from jobs.common.errors import UserError
from jobs.common.schema import PAIR_SCORES_DDL
from jobs.compare.config import CompareConfig
from jobs.compare.job import run_compare
from jobs.compare.worker import largest_face
from tests.fixtures.faces import clustered, declared_layout, table_layout, write_faces
from tests.fixtures.images import bad_input_corpus

pytestmark = pytest.mark.slow


def compare_config(tmp_path: Path, pairs: Path, *extra: str) -> CompareConfig:
    return load_config(
        CompareConfig,
        None,
        [
            f"spark.data_root={tmp_path / 'data'}",
            f"compare.pairs.path={pairs}",
            f"compare.scores_table={tmp_path / 'scores'}",
            f"runs_table={tmp_path / 'runs'}",
            *extra,
        ],
    )


@pytest.mark.data
def test_image_pairs_score_like_the_pipeline(spark, tmp_path: Path, shared_data: Path, face_pipeline) -> None:
    people = shared_data / "lfw" / "images"
    images = {
        "a1": people / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg",
        "a2": people / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg",
        "z1": people / "Zico" / "Zico_0001.jpg",
    }
    folder = tmp_path / "images"
    folder.mkdir()
    for name, path in images.items():
        shutil.copy(path, folder / f"{name}.jpg")
    (folder / "bad.jpg").write_bytes(bad_input_corpus()["truncated_jpeg"])
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "a,b\nimages/a1.jpg,images/a2.jpg\nimages/a1.jpg,images/z1.jpg\n"
        f"images/bad.jpg,images/a1.jpg\nimages/a2.jpg,{folder / 'missing.jpg'}\n"
    )
    summary = run_compare(compare_config(tmp_path, pairs, "compare.threshold.value=0.93"), spark)
    rows = sorted(spark.read.format("delta").load(str(tmp_path / "scores")).collect(), key=lambda r: r.pair_index)
    assert [r.pair_index for r in rows] == [0, 1, 2, 3]
    embedding = {}
    for name in ("a1", "a2", "z1"):
        result = face_pipeline.process_bytes([(folder / f"{name}.jpg").read_bytes()])[0]
        embedding[name] = largest_face(result.faces).embedding
    assert rows[0].status == "ok" and rows[0].score == pytest.approx(float(embedding["a1"] @ embedding["a2"]), abs=1e-5)
    assert rows[1].status == "ok" and rows[1].score == pytest.approx(float(embedding["a1"] @ embedding["z1"]), abs=1e-5)
    assert rows[0].score > rows[1].score
    assert rows[0].above_threshold == (rows[0].score >= 0.93) and rows[0].threshold == 0.93
    assert rows[2].status == "a_decode_error" and rows[2].score is None and rows[2].above_threshold is None
    assert rows[3].status == "b_read_error" and "b: read_error" in rows[3].error
    assert summary["pairs"] == 4 and summary["pairs_ok"] == 2


def test_face_id_pairs_from_a_faces_table(spark, tmp_path: Path) -> None:
    vectors = clustered(6, dim=8, seed=4)
    ids = np.array([11, 22, 33, 44, 55, 66], dtype=np.int64)
    statuses = ["ok", "ok", "ok", "ok", "ok", "no_face"]
    write_faces(spark, tmp_path / "faces", ids, vectors, statuses=statuses)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("left\tright\n11\t22\n33\t44\n11\t99\nxyz\t22\n66\t11\n")
    config = compare_config(
        tmp_path,
        pairs,
        "compare.pairs.kind=faces",
        "compare.pairs.format=tsv",
        'compare.pairs.columns=["left", "right"]',
        f"compare.faces_table={tmp_path / 'faces'}",
    )
    summary = run_compare(config, spark)
    assert summary["threshold"] is None and "no threshold given" in summary["threshold_note"]
    rows = sorted(spark.read.format("delta").load(str(tmp_path / "scores")).collect(), key=lambda r: r.pair_index)
    assert rows[0].score == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-6)
    assert rows[1].score == pytest.approx(float(vectors[2] @ vectors[3]), abs=1e-6)
    assert [r.status for r in rows] == ["ok", "ok", "b_unknown_face", "a_bad_face_id", "a_no_face"]
    assert all(r.above_threshold is None for r in rows)
    assert table_layout(spark, tmp_path / "scores") == declared_layout(PAIR_SCORES_DDL)
    runs = spark.read.format("delta").load(str(tmp_path / "runs")).collect()
    assert [(r.job, r.status, r.counts["pairs"]) for r in runs] == [("compare", "ok", 5)]


def test_pairs_file_without_the_columns_is_refused(spark, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("x,y\n1,2\n")
    with pytest.raises(UserError, match=r"has no column\(s\) \['a', 'b'\].*compare.pairs.columns"):
        run_compare(compare_config(tmp_path, pairs, "compare.pairs.kind=faces"), spark)
