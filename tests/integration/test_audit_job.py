"""The audit job on synthetic labelled faces: numbers equal an independent brute-force count, a
calibration record drives a query, 1:N numbers from a real query run, and the HTML report renders in
headless Chromium with its plots and without console errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.audit.config import AuditConfig
from jobs.audit.job import run_audit, run_calibrate
from jobs.common.calibrations import load_calibration
from jobs.common.config import load_config
from jobs.common.errors import UserError
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.query.config import QueryConfig
from jobs.query.job import run_query
from tests.fixtures.browser import load_page
from tests.fixtures.faces import write_faces

pytestmark = pytest.mark.slow


def labelled_world(count: int = 400, dim: int = 16, seed: int = 0):
    """Subjects with 4 faces each; group 'b' is drawn from a narrower region, so its impostors score higher."""
    rng = np.random.default_rng(seed)
    subjects = np.arange(count) // 4
    group = np.where(subjects % 2 == 0, "a", "b")
    centres = rng.normal(size=(subjects.max() + 1, dim))
    centres[1::2, : dim // 2] *= 0.35  # group b: less spread between people
    vectors = centres[subjects] + 0.3 * rng.normal(size=(count, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), [f"s{s}" for s in subjects], [{"g": g} for g in group]


@pytest.fixture(scope="module")
def labelled(spark, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("audit")
    vectors, subjects, attributes = labelled_world()
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    write_faces(spark, root / "faces", ids, vectors, subjects=subjects, attributes=attributes)
    return {"root": root, "vectors": vectors, "subjects": subjects, "attributes": attributes, "ids": ids}


def audit_config(world: dict, *extra: str) -> AuditConfig:
    root = world["root"]
    return load_config(
        AuditConfig,
        None,
        [
            f"spark.data_root={root / 'data'}",
            f"audit.labelled.faces_table={root / 'faces'}",
            "audit.labelled.name=synthetic 400 faces",
            "audit.labelled.face_per_image=all",
            "audit.bootstrap_rounds=200",
            *extra,
        ],
    )


def brute_force(world: dict, group: str | None = None):
    v, s, a = world["vectors"], world["subjects"], world["attributes"]
    genuine, impostor = [], []
    for i in range(len(v)):
        for j in range(i + 1, len(v)):
            if group is not None and not (a[i]["g"] == a[j]["g"] == group):
                continue
            (genuine if s[i] == s[j] else impostor).append(float(v[i] @ v[j]))
    return np.array(genuine), np.array(impostor)


def test_one_to_one_numbers_equal_a_brute_force_count(spark, labelled: dict) -> None:
    summary = run_audit(audit_config(labelled, "audit.group_by=[g]"), spark)
    one = summary["one_to_one"]
    genuine, impostor = brute_force(labelled)
    assert one["pairs"] == {"genuine_pairs": len(genuine), "impostor_pairs": len(impostor)}
    assert not one["sampled_impostors"]
    for point in one["operating_points"]:
        t = point["threshold"]
        assert point["fmr"] == pytest.approx((impostor >= t).mean(), abs=1e-12)
        assert point["fnmr"] == pytest.approx((genuine < t).mean(), abs=1e-12)
        assert point["fmr"] <= point["target_fmr"] or not point["resolvable"]
        assert point["fmr_ci_low"] <= point["fmr"] <= point["fmr_ci_high"]
    groups = one["groups"]["g"]
    t = groups["threshold"]
    for name in ("a", "b"):
        g_genuine, g_impostor = brute_force(labelled, name)
        assert groups["groups"][name]["fmr"] == pytest.approx((g_impostor >= t).mean(), abs=1e-12)
        assert groups["groups"][name]["impostor_pairs"] == len(g_impostor)
    assert groups["groups"]["b"]["fmr"] > groups["groups"]["a"]["fmr"]  # the narrower group errs more
    metrics = (
        spark.read.format("delta").load(summary["outputs"]["metrics_table"]).where(f"run_id = '{summary['run_id']}'")
    )
    assert metrics.where("scope = '1:1 group' and metric = 'fmr'").count() == 2
    runs = spark.read.format("delta").load(summary["outputs"]["runs_table"]).where("job = 'audit'").collect()
    assert runs[-1].status == "ok" and runs[-1].inputs[0].version == 0

    # An attribute no face has would make a one-group "differential" of everyone as unknown: refused.
    with pytest.raises(
        UserError,
        match=r"audit.group_by names 'race', which no face of synthetic 400 faces has; its attributes: \['g'\]",
    ):
        run_audit(audit_config(labelled, "audit.group_by=[g, race]"), spark)


def test_calibration_record_drives_a_query(spark, labelled: dict) -> None:
    summary = run_calibrate(audit_config(labelled), 1e-3, spark)
    _, impostor = brute_force(labelled)
    assert summary["impostor_pairs"] == len(impostor) and summary["resolvable"]
    assert summary["measured_fmr"] == pytest.approx((impostor >= summary["threshold"]).mean())
    assert summary["measured_fmr"] <= 1e-3
    record = load_calibration(summary["calibration_id"], labelled["root"] / "data", "test")
    assert record.data.version == 0 and record.model_id == "m-test"
    table = spark.read.format("delta").load(summary["outputs"]["calibrations_table"]).collect()
    assert [r.calibration_id for r in table] == [summary["calibration_id"]]
    assert json.loads(table[0].record)["threshold"] == summary["threshold"]


def test_matched_impostor_calibration_holds_the_target_in_the_worst_group(
    spark, labelled: dict, tmp_path: Path
) -> None:
    """`--matched-impostors g`: impostor pairs within each group, and the threshold that holds FMR 1e-2
    for the worse group (b, narrower); each group's rate is recorded and a query's rows carry the rate of
    the probe's own group, with the expected false candidates computed from it."""
    target = 1e-2
    ordinary = run_calibrate(audit_config(labelled), target, spark)
    matched = run_calibrate(audit_config(labelled), target, spark, matched_impostors=["g"])
    thresholds = {}
    for group in ("a", "b"):
        _, impostor = brute_force(labelled, group)
        ranked = np.sort(impostor)[::-1]
        thresholds[group] = float(np.nextafter(ranked[int(np.floor(target * len(ranked)))], np.inf))
    assert matched["threshold"] == pytest.approx(max(thresholds.values())) == pytest.approx(thresholds["b"])
    assert matched["worst_group"] == "g=b" and matched["matched_impostors"] == ["g"]
    for group in ("a", "b"):
        _, impostor = brute_force(labelled, group)
        assert matched["group_fmr"][f"g={group}"] == pytest.approx((impostor >= matched["threshold"]).mean())
        assert matched["group_fmr"][f"g={group}"] <= target
    assert matched["threshold"] > ordinary["threshold"]  # cross-group impostors had set it too low for b
    assert matched["group_impostor_pairs"] == {
        "g=a": len(brute_force(labelled, "a")[1]),
        "g=b": len(brute_force(labelled, "b")[1]),
    }

    # A query with that calibration: each probe's rows carry its group's FMR, gallery faces x that rate.
    root = labelled["root"]
    vectors, subjects, attributes, ids = (
        labelled["vectors"],
        labelled["subjects"],
        labelled["attributes"],
        labelled["ids"],
    )
    write_faces(spark, tmp_path / "gallery", ids[::4], vectors[::4], subjects=subjects[::4], attributes=attributes[::4])
    run_index(
        load_config(
            IndexConfig, None, [f"index.faces_table={tmp_path / 'gallery'}", f"index.index_dir={tmp_path / 'index'}"]
        ),
        spark,
    )
    probe_ids = ids[1::4] + 10_000_000
    write_faces(
        spark, tmp_path / "probes", probe_ids, vectors[1::4], subjects=subjects[1::4], attributes=attributes[1::4]
    )
    config = load_config(
        QueryConfig,
        None,
        [
            f"spark.data_root={root / 'data'}",
            f"query.probes.faces_table={tmp_path / 'probes'}",
            f"query.index_dir={tmp_path / 'index'}",
            f"query.matches_table={tmp_path / 'matches'}",
            f"query.identities_table={tmp_path / 'identities'}",
            f"query.threshold.calibration={matched['calibration_id']}",
            "query.k=3",
        ],
    )
    run_query(config, spark)
    gallery = len(ids[::4])
    group_of = {int(i): a["g"] for i, a in zip(probe_ids, attributes[1::4])}
    rows = spark.read.format("delta").load(str(tmp_path / "matches")).collect()
    assert rows
    for row in rows:
        group = group_of[row.probe_face_id]
        assert row.threshold_fmr_group == f"g={group}"
        assert row.threshold_fmr == pytest.approx(matched["group_fmr"][f"g={group}"])
        assert row.expected_false_candidates == pytest.approx(gallery * matched["group_fmr"][f"g={group}"])


def test_one_to_n_and_the_report_renders_in_chromium(spark, labelled: dict) -> None:
    root = labelled["root"]
    # gallery: the first face of every even-numbered subject; probes: every other face (mated and non-mated)
    gallery = [i for i in range(len(labelled["ids"])) if i % 4 == 0 and (i // 4) % 2 == 0]
    probes = [i for i in range(len(labelled["ids"])) if i % 4 != 0]
    pick = lambda rows, key: [labelled[key][i] for i in rows]  # noqa: E731
    write_faces(
        spark,
        root / "gallery",
        labelled["ids"][gallery],
        labelled["vectors"][gallery],
        subjects=pick(gallery, "subjects"),
    )
    write_faces(
        spark,
        root / "probes",
        labelled["ids"][probes] + 10_000,
        labelled["vectors"][probes],
        subjects=pick(probes, "subjects"),
        attributes=pick(probes, "attributes"),
    )
    run_index(
        load_config(IndexConfig, None, [f"index.faces_table={root / 'gallery'}", f"index.index_dir={root / 'index'}"]),
        spark,
    )
    query = run_query(
        load_config(
            QueryConfig,
            None,
            [
                f"spark.data_root={root / 'data'}",
                f"query.probes.faces_table={root / 'probes'}",
                f"query.index_dir={root / 'index'}",
                "query.k=5",
            ],
        ),
        spark,
    )
    summary = run_audit(
        audit_config(
            labelled,
            f"audit.identification.matches_table={query['outputs']['matches_table']}",
            "audit.group_by=[g]",
        ),
        spark,
    )
    many = summary["one_to_n"]
    assert many["gallery_size"] == len(gallery) and many["searches"] == len(probes)
    mated = [i for i in probes if (i // 4) % 2 == 0]
    assert many["mated_searches"] == len(mated) and many["non_mated_searches"] == len(probes) - len(mated)
    matches = spark.read.format("delta").load(query["outputs"]["matches_table"]).where("rank = 1").collect()
    hits = sum(r.gallery_subject_id == r.probe_subject_id for r in matches)
    assert many["rank_1_hit_rate"] == pytest.approx(hits / len(mated))
    labels = {row["threshold_label"] for row in many["scenario"]}
    assert "fixed 0.8" in labels and any(label.startswith("calibrated FMR 0.0001") for label in labels)

    report = Path(summary["outputs"]["report"])
    page = load_page(
        report.as_uri(),
        "JSON.stringify({plots: Array.from(document.images).filter(i => i.complete && i.naturalWidth > 100).length,"
        " images: document.images.length, tables: document.querySelectorAll('table').length,"
        " text: document.body.innerText})",
    )
    assert page.console_errors == [] and page.exceptions == [] and page.log_errors == []
    facts = json.loads(page.evaluated)
    assert facts["images"] == facts["plots"] == 2  # DET curve and score histogram, decoded by the browser
    assert facts["tables"] >= 5
    assert "synthetic 400 faces" in facts["text"] and f"gallery {len(gallery)} faces" in facts["text"]


def test_fsn_calibration_narrows_the_gap_and_every_consumer_applies_it(spark, labelled: dict, tmp_path: Path) -> None:
    from jobs.common.normalization import normalization_from_record
    from jobs.compare.config import CompareConfig
    from jobs.compare.job import run_compare

    root, vectors = labelled["root"], labelled["vectors"]
    calibration = run_calibrate(audit_config(labelled), 1e-2, spark, normalization="fsn", clusters=4)
    record = load_calibration(calibration["calibration_id"], root / "data", "test")
    assert record.normalization is not None
    assert record.normalization["k"] == 4 and "group" not in json.dumps(record.normalization)
    fsn = normalization_from_record(record.normalization)
    offsets = fsn.offsets_of(vectors)

    # Audit: raw and normalized side by side, both at the threshold giving FMR 1e-2 on their own scores.
    summary = run_audit(
        audit_config(
            labelled,
            "audit.group_by=[g]",
            f"audit.normalization={calibration['calibration_id']}",
            "audit.differential_fmr=0.01",
        ),
        spark,
    )
    raw, normalized = summary["one_to_one"], summary["one_to_one_normalized"]
    assert normalized["normalization"] == f"fsn-v1:{calibration['calibration_id']}"
    assert normalized["global_threshold"]["fmr"] == pytest.approx(raw["global_threshold"]["fmr"], abs=1e-3)
    assert normalized["groups"]["g"]["fmr_max_min_ratio"] < raw["groups"]["g"]["fmr_max_min_ratio"]
    t = normalized["groups"]["g"]["threshold"]
    s, a = labelled["subjects"], labelled["attributes"]
    b_impostors = [
        float(vectors[i] @ vectors[j]) - (offsets[i] + offsets[j]) / 2
        for i in range(len(vectors))
        for j in range(i + 1, len(vectors))
        if a[i]["g"] == a[j]["g"] == "b" and s[i] != s[j]
    ]
    assert normalized["groups"]["g"]["groups"]["b"]["fmr"] == pytest.approx(
        (np.array(b_impostors) >= t).mean(), abs=1e-6
    )
    metrics = (
        spark.read.format("delta").load(summary["outputs"]["metrics_table"]).where(f"run_id = '{summary['run_id']}'")
    )
    assert metrics.where("scope = '1:1 group normalized' and metric = 'fmr'").count() == 2
    assert metrics.where("scope = '1:1 group' and metric = 'fmr'").count() == 2
    assert "Raw and normalized scores" in Path(summary["outputs"]["report"]).read_text()

    # Query: the raw score as before, the normalized one beside it, above_threshold judged on it.
    gallery = [i for i in range(len(vectors)) if i % 4 == 0]
    probes = [i for i in range(len(vectors)) if i % 4 == 1]
    write_faces(spark, tmp_path / "gallery", labelled["ids"][gallery], vectors[gallery])
    write_faces(spark, tmp_path / "probes", labelled["ids"][probes] + 10_000, vectors[probes])
    run_index(
        load_config(
            IndexConfig, None, [f"index.faces_table={tmp_path / 'gallery'}", f"index.index_dir={tmp_path / 'index'}"]
        ),
        spark,
    )

    def query(plan: str, index: str = "index", *extra: str) -> list:
        summary = run_query(
            load_config(
                QueryConfig,
                None,
                [
                    f"spark.data_root={root / 'data'}",
                    f"query.probes.faces_table={tmp_path / 'probes'}",
                    f"query.index_dir={tmp_path / index}",
                    f"query.matches_table={tmp_path / 'matches'}",
                    f"query.identities_table={tmp_path / 'identities'}",
                    f"query.threshold.calibration={calibration['calibration_id']}",
                    f"query.plan={plan}",
                    "query.k=3",
                    *extra,
                ],
            ),
            spark,
        )
        assert summary["normalization"] == normalized["normalization"]
        matches = spark.read.format("delta").load(str(tmp_path / "matches"))
        return matches.where(f"run_id = '{summary['run_id']}'").collect()

    rows = query("all_shards")
    per_shard = query("per_shard")
    key = lambda r: (r.probe_face_id, r.rank, r.gallery_face_id, r.normalized_score)  # noqa: E731
    assert sorted(map(key, per_shard)) == sorted(map(key, rows))  # both plans rescore alike
    # An approximate index re-ranked exactly: the driver-side path normalizes after the exact rescoring.
    run_index(
        load_config(
            IndexConfig,
            None,
            [
                f"index.faces_table={tmp_path / 'gallery'}",
                f"index.index_dir={tmp_path / 'ivf'}",
                "index.factory=IVF2,Flat",
                "index.recall_floor=0.95",
                "index.shards=1",
            ],
        ),
        spark,
    )
    reranked = query("all_shards", "ivf", "query.rerank=true", "query.search_value=2")
    pairs = lambda found: sorted((r.probe_face_id, r.gallery_face_id) for r in found)  # noqa: E731
    assert pairs(reranked) == pairs(rows)
    assert sorted(r.normalized_score for r in reranked) == pytest.approx(sorted(r.normalized_score for r in rows))
    position = {int(face_id): i for i, face_id in enumerate(labelled["ids"])}
    assert len(rows) == 3 * len(probes)
    for row in rows:
        p, g = position[row.probe_face_id - 10_000], position[row.gallery_face_id]
        assert row.score == pytest.approx(float(vectors[p] @ vectors[g]), abs=1e-5)  # raw, unchanged
        assert row.normalized_score == pytest.approx(row.score - (offsets[p] + offsets[g]) / 2, abs=1e-5)
        assert row.above_threshold == (row.normalized_score >= record.threshold)
    for probe in {r.probe_face_id for r in rows}:  # ranked by normalized score, the best k of all gallery faces
        p = position[probe - 10_000]
        every = sorted((float(vectors[p] @ vectors[g]) - (offsets[p] + offsets[g]) / 2 for g in gallery), reverse=True)
        mine = sorted((r.normalized_score for r in rows if r.probe_face_id == probe), reverse=True)
        assert mine == pytest.approx(every[:3], abs=1e-5)

    # Compare: face-id pairs scored raw and normalized with the same calibration.
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\n" + "\n".join(f"{labelled['ids'][i]},{labelled['ids'][i + 4]}" for i in range(0, 40, 2)))
    compare = run_compare(
        load_config(
            CompareConfig,
            None,
            [
                f"spark.data_root={root / 'data'}",
                f"compare.pairs.path={pairs}",
                "compare.pairs.kind=faces",
                f"compare.faces_table={root / 'faces'}",
                f"compare.scores_table={tmp_path / 'scores'}",
                f"compare.threshold.calibration={calibration['calibration_id']}",
            ],
        ),
        spark,
    )
    assert compare["normalization"] == normalized["normalization"]
    for row in spark.read.format("delta").load(str(tmp_path / "scores")).collect():
        i, j = position[row.a_face_id], position[row.b_face_id]
        assert row.score == pytest.approx(float(vectors[i] @ vectors[j]), abs=1e-5)
        assert row.normalized_score == pytest.approx(row.score - (offsets[i] + offsets[j]) / 2, abs=1e-5)
        assert row.above_threshold == (row.normalized_score >= record.threshold)
