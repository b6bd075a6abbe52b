"""The query job on synthetic faces tables: Spark top-k == numpy brute force, thresholds (explicit,
calibrated, none), identities, re-rank, refusals, the runs audit trail, and reading without Spark."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import main as cli_main
from jobs.common.calibrations import CalibrationRecord, write_calibration
from jobs.common.config import load_config
from jobs.common.errors import UserError
from jobs.common.schema import (
    IDENTITIES_DDL,
    IDENTITIES_STATS_COLUMNS,
    MATCHES_DDL,
    MATCHES_STATS_COLUMNS,
    STATS_PROPERTY,
)
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.query.config import QueryConfig
from jobs.query.job import run_query
from jobs.shards.build import exact_top_k
from jobs.shards.manifest import read_manifest, write_manifest
from tests.fixtures.faces import clustered, declared_layout, table_layout, write_faces

pytestmark = pytest.mark.slow

GALLERY = 2000
K = 10


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A gallery of 2,000 faces (500 subjects) in an exact 3-shard index, and 150 probes: 120 ok, 30 failed."""
    root = tmp_path_factory.mktemp("query")
    gallery_ids = np.arange(1, GALLERY + 1, dtype=np.int64) * 104729
    gallery = clustered(GALLERY, dim=16, seed=1)
    subjects = [f"s{i % 500:03d}" for i in range(GALLERY)]
    write_faces(spark, root / "gallery", gallery_ids, gallery, subjects=subjects)
    index_config = load_config(
        IndexConfig,
        None,
        [f"index.faces_table={root / 'gallery'}", f"index.index_dir={root / 'index'}", "index.shards=3"],
    )
    run_index(index_config, spark)
    probe_ids = np.arange(5_000_000, 5_000_150, dtype=np.int64)
    probes = clustered(150, dim=16, seed=2)
    statuses = ["ok"] * 120 + ["no_face"] * 20 + ["decode_error"] * 10
    write_faces(spark, root / "probes", probe_ids, probes, statuses=statuses, subjects=["p"] * 150)
    return {
        "root": root,
        "gallery_ids": gallery_ids,
        "gallery": gallery,
        "subjects": dict(zip(gallery_ids.tolist(), subjects)),
        "probe_ids": probe_ids[:120],
        "probes": probes[:120],
    }


def query_config(world: dict, *extra: str, name: str = "run") -> QueryConfig:
    root = world["root"]
    return load_config(
        QueryConfig,
        None,
        [
            f"spark.data_root={root / 'data'}",
            f"query.probes.faces_table={root / 'probes'}",
            f"query.index_dir={root / 'index'}",
            f"query.matches_table={root / name / 'matches'}",
            f"query.identities_table={root / name / 'identities'}",
            f"runs_table={root / 'runs'}",
            f"query.k={K}",
            "query.probe_partitions=2",
            *extra,
        ],
    )


def rows_of(spark, path: Path, run_id: str) -> list:
    return spark.read.format("delta").load(str(path)).where(f"run_id = '{run_id}'").collect()


@pytest.mark.parametrize("plan", ["all_shards", "per_shard"])
def test_exact_query_equals_numpy_brute_force(spark, world: dict, plan: str) -> None:
    config = query_config(world, "query.threshold.value=0.8", f"query.plan={plan}", name=f"exact-{plan}")
    summary = run_query(config, spark)
    assert summary["plan"] == plan
    assert summary["probes_searched"] == 120 and summary["probes_no_face"] == 20 and summary["gallery_size"] == GALLERY
    rows = rows_of(spark, world["root"] / f"exact-{plan}" / "matches", summary["run_id"])
    found = [r for r in rows if r.rank is not None]
    assert len(found) == 120 * K and summary["candidates"] == 120 * K
    expected_scores, expected_ids = exact_top_k(world["gallery"], world["gallery_ids"], world["probes"], K)
    by_probe = {}
    for row in found:
        by_probe.setdefault(row.probe_face_id, []).append(row)
    for position, probe_id in enumerate(world["probe_ids"].tolist()):
        ranked = sorted(by_probe[probe_id], key=lambda r: r.rank)
        assert [r.rank for r in ranked] == list(range(1, K + 1))
        assert [r.gallery_face_id for r in ranked] == expected_ids[position].tolist()
        np.testing.assert_allclose([r.score for r in ranked], expected_scores[position], atol=1e-5)
        assert [r.gallery_subject_id for r in ranked] == [world["subjects"][i] for i in expected_ids[position]]
        assert all(r.above_threshold == (r.score >= 0.8) and r.threshold == 0.8 for r in ranked)
    failed = [r for r in rows if r.rank is None]
    assert sorted(r.probe_status for r in failed) == ["decode_error"] * 10 + ["no_face"] * 20
    assert all(r.gallery_face_id is None and r.above_threshold is None for r in failed)
    above = sum(any(r.score >= 0.8 for r in by_probe[p]) for p in by_probe)
    assert summary["probes_with_candidate_above_threshold"] == above


def test_an_index_from_before_face_subjects_names_subjects_from_the_gallery(spark, world: dict, tmp_path: Path) -> None:
    """The generation's face_subjects file and subject count name the candidates' subjects; an index written
    before generations kept them is read as it was (the gallery table joined) with the same rows."""
    manifest = read_manifest(world["root"] / "index")
    assert manifest.face_subjects_file and manifest.gallery_subjects == 500
    older = tmp_path / "older-index"
    shutil.copytree(world["root"] / "index", older)
    (older / manifest.face_subjects_file).unlink()
    fields = {"face_subjects_file", "face_subjects_sha256", "gallery_subjects"}
    write_manifest(older, manifest.model_copy(update=dict.fromkeys(fields)))
    runs = {}
    for name, index in (("with-file", world["root"] / "index"), ("older", older)):
        summary = run_query(query_config(world, f"query.index_dir={index}", name=name), spark)
        assert summary["gallery_subjects"] == 500
        rows = rows_of(spark, world["root"] / name / "matches", summary["run_id"])
        runs[name] = sorted(
            (r.probe_face_id, r.rank or 0, r.gallery_face_id or 0, r.gallery_subject_id or "") for r in rows
        )
    assert runs["with-file"] == runs["older"]
    assert all(subject == world["subjects"][face] for _, rank, face, subject in runs["older"] if rank)


@pytest.mark.parametrize("plan", ["all_shards", "per_shard"])
def test_identities_rank_best_score_per_subject(spark, world: dict, plan: str) -> None:
    """all_shards ranks subjects in its search tasks, per_shard after merging the shards' lists: both as the
    matches say (best score, the face at the subject's best rank, how many candidates it holds)."""
    name = f"ident-{plan}"
    summary = run_query(query_config(world, "query.threshold.value=0.9", f"query.plan={plan}", name=name), spark)
    matches = rows_of(spark, world["root"] / name / "matches", summary["run_id"])
    identities = rows_of(spark, world["root"] / name / "identities", summary["run_id"])
    expected: dict[int, dict[str, list]] = {}
    for row in sorted((r for r in matches if r.rank is not None), key=lambda r: r.rank):
        subject = expected.setdefault(row.probe_face_id, {}).setdefault(row.gallery_subject_id, [-2.0, None, 0])
        subject[0] = max(subject[0], row.score)
        subject[1] = subject[1] if subject[1] is not None else row.gallery_face_id
        subject[2] += 1
    assert len({r.probe_face_id for r in identities}) == 120
    # The tables written are the layouts declared once in jobs.common.schema.
    assert table_layout(spark, world["root"] / name / "matches") == declared_layout(MATCHES_DDL)
    assert table_layout(spark, world["root"] / name / "identities") == declared_layout(IDENTITIES_DDL)
    for probe_id, best in expected.items():
        mine = sorted((r for r in identities if r.probe_face_id == probe_id), key=lambda r: r.rank)
        assert [r.rank for r in mine] == list(range(1, len(best) + 1))
        assert [r.gallery_subject_id for r in mine] == sorted(best, key=lambda s: (-best[s][0], s))
        assert [[r.best_score, r.best_gallery_face_id, r.candidate_faces] for r in mine] == [
            best[r.gallery_subject_id] for r in mine
        ]
        assert all(r.above_threshold == (r.best_score >= 0.9) for r in mine)
        assert all(r.queried_at == matches[0].queried_at for r in mine)


def logged_stats_columns(table: Path) -> dict[int, set[str]]:
    """Per commit of a Delta table, the columns its data files carry statistics on (from the log itself)."""
    found: dict[int, set[str]] = {}
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            add = json.loads(line).get("add")
            if add and add.get("stats"):
                stats = json.loads(add["stats"])
                found.setdefault(int(commit.stem), set()).update(stats.get("minValues", {}), stats.get("nullCount", {}))
    return found


def test_results_tables_keep_no_personal_statistics(spark, world: dict) -> None:
    """Delta's log outlives an erasure: subject ids, paths and attributes never enter it as min/max; a table
    written before Lineup limited its statistics is limited by the next query."""
    name = "stats"
    run_query(query_config(world, name=name), spark)
    for table in ("matches", "identities"):
        spark.sql(f"ALTER TABLE delta.`{world['root'] / name / table}` UNSET TBLPROPERTIES ('{STATS_PROPERTY}')")
    run_query(query_config(world, name=name), spark)
    for table, allowed in (("matches", MATCHES_STATS_COLUMNS), ("identities", IDENTITIES_STATS_COLUMNS)):
        path = world["root"] / name / table
        properties = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()}
        assert properties[STATS_PROPERTY] == allowed
        per_commit = logged_stats_columns(path)
        assert len(per_commit) == 2  # both queries' appends
        for columns in per_commit.values():
            assert columns and columns <= set(allowed.split(","))
            assert not columns & {"gallery_subject_id", "probe_subject_id", "probe_source_path", "probe_image_id"}


def test_no_threshold_is_said_and_above_threshold_is_null(spark, world: dict) -> None:
    summary = run_query(query_config(world, name="none"), spark)
    assert summary["threshold"] is None and summary["threshold_source"] == "none"
    assert "no threshold given" in summary["threshold_note"]
    assert "probes_with_candidate_above_threshold" not in summary
    rows = rows_of(spark, world["root"] / "none" / "matches", summary["run_id"])
    assert len([r for r in rows if r.rank is not None]) == 120 * K  # every candidate is still written
    assert all(r.above_threshold is None and r.threshold is None for r in rows)
    assert all(r.threshold_fmr is None and r.expected_false_candidates is None for r in rows)
    assert "every candidate may be a stranger" in summary["error_budget"]["note"]


def test_calibrated_threshold_is_recorded_and_other_models_refused(spark, world: dict) -> None:
    data_root = world["root"] / "data"
    record = {
        "calibration_id": "cal-test-1",
        "threshold": 0.85,
        "model_id": "m-test",
        "target_fmr": 1e-3,
        "measured_fmr": 9e-4,
        "impostor_pairs": 10000,
        "data": {"name": "synthetic"},
    }
    write_calibration(data_root, CalibrationRecord.model_validate(record))
    summary = run_query(query_config(world, "query.threshold.calibration=cal-test-1", name="cal"), spark)
    assert summary["threshold"] == 0.85 and summary["threshold_source"] == "calibration:cal-test-1"
    runs = rows_of(spark, world["root"] / "runs", summary["run_id"])
    assert [(r.status, r.threshold, r.threshold_source) for r in runs] == [("ok", 0.85, "calibration:cal-test-1")]
    names = {entry.name: entry.version for entry in runs[0].inputs}
    assert names["probe_faces"] == 0 and names["gallery_faces"] == 0
    assert json.loads(runs[0].params)["index_id"] == summary["index_id"]
    # The error budget, by hand: 2,000 gallery faces of 500 subjects x measured FMR 9e-4 = 1.8 false
    # candidates a search should expect, on every row, in the JSON line and in the runs row's params.
    expected = {
        "gallery_size": GALLERY,
        "gallery_subjects": 500,
        "threshold_source": "calibration:cal-test-1",
        "threshold_fmr": 9e-4,
        "threshold_fmr_data": "synthetic",
    }
    matches = rows_of(spark, world["root"] / "cal" / "matches", summary["run_id"])
    identities = rows_of(spark, world["root"] / "cal" / "identities", summary["run_id"])
    for row in matches + identities:
        assert {key: getattr(row, key) for key in expected} == expected
        assert row.expected_false_candidates == pytest.approx(2000 * 9e-4)
    assert len(identities) > 0
    budget = summary["error_budget"]
    assert {key: budget[key] for key in expected} == expected
    assert budget["expected_false_candidates"] == pytest.approx(1.8) and "1.8 false candidates" in budget["note"]
    assert json.loads(runs[0].params)["error_budget"]["expected_false_candidates"] == pytest.approx(1.8)
    other = {**record, "calibration_id": "cal-other", "model_id": "another-model"}
    write_calibration(data_root, CalibrationRecord.model_validate(other))
    with pytest.raises(UserError, match="measured for model another-model"):
        run_query(query_config(world, "query.threshold.calibration=cal-other", name="cal2"), spark)
    failed = spark.read.format("delta").load(str(world["root"] / "runs")).where("status = 'failed'").collect()
    assert any("another-model" in r.error for r in failed)


def test_approximate_index_with_rerank_gives_exact_scores(spark, world: dict, tmp_path: Path) -> None:
    root = world["root"]
    run_index(
        load_config(
            IndexConfig,
            None,
            [
                f"index.faces_table={root / 'gallery'}",
                f"index.index_dir={tmp_path / 'ivf'}",
                "index.shards=2",
                "index.factory=IVF16,Flat",
                "index.recall_floor=0.95",
                "index.holdout_queries=200",
            ],
        ),
        spark,
    )
    extra = [
        f"query.index_dir={tmp_path / 'ivf'}",
        "query.rerank=true",
        "query.search_value=1",
        "query.rerank_factor=3",
    ]
    summary = run_query(query_config(world, *extra, name="rerank"), spark)
    rows = [r for r in rows_of(spark, root / "rerank" / "matches", summary["run_id"]) if r.rank is not None]
    vectors = dict(zip(world["gallery_ids"].tolist(), world["gallery"]))
    probes = dict(zip(world["probe_ids"].tolist(), world["probes"]))
    for row in rows:
        assert row.score == pytest.approx(float(probes[row.probe_face_id] @ vectors[row.gallery_face_id]), abs=1e-5)
    per_probe = {}
    for row in rows:
        per_probe.setdefault(row.probe_face_id, []).append(row)
    for ranked in per_probe.values():
        ranked.sort(key=lambda r: r.rank)
        assert len(ranked) == K and all(a.score >= b.score for a, b in zip(ranked, ranked[1:]))


def test_probes_of_another_model_or_dimension_are_refused(spark, world: dict, tmp_path: Path) -> None:
    write_faces(spark, tmp_path / "other", np.arange(5, dtype=np.int64), clustered(5), model_id="other-model")
    with pytest.raises(UserError, match="embedded with \\['other-model'\\]"):
        run_query(query_config(world, f"query.probes.faces_table={tmp_path / 'other'}"), spark)
    write_faces(spark, tmp_path / "narrow", np.arange(5, dtype=np.int64), clustered(5, dim=8))
    with pytest.raises(UserError, match="\\[8\\] dimensions, the index 16"):
        run_query(query_config(world, f"query.probes.faces_table={tmp_path / 'narrow'}"), spark)


def test_missing_or_tampered_index_fails_cleanly(spark, world: dict, tmp_path: Path, capsys) -> None:
    missing = query_config(world, f"query.index_dir={tmp_path / 'nowhere'}")
    with pytest.raises(UserError, match="is not a Lineup index"):
        run_query(missing, spark)
    copy = tmp_path / "tampered"
    copy.mkdir()
    for path in (world["root"] / "index").iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    shard = sorted(copy.glob("shard-*.faiss"))[0]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    overrides = {
        "query.index_dir": copy,
        "query.probes.faces_table": world["root"] / "probes",
        "spark.data_root": world["root"] / "data",
    }
    assert cli_main(["query", *(f"--set={key}={value}" for key, value in overrides.items())]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("lineup query: error:")]
    assert len(errors) == 1 and "fails its sha256 check" in errors[0] and "Traceback" not in err


def test_matches_are_readable_without_spark(spark, world: dict) -> None:
    """The example of docs/jobs/query.md: the deltalake package reads the matches table (no JVM)."""
    from deltalake import DeltaTable

    summary = run_query(query_config(world, "query.threshold.value=0.8", name="plain"), spark)
    matches = DeltaTable(str(world["root"] / "plain" / "matches")).to_pandas(
        columns=["run_id", "probe_face_id", "rank", "gallery_face_id", "score", "above_threshold"]
    )
    latest = matches[matches.run_id == matches.run_id.max()]
    assert len(latest) == 120 * K + 30
    spark_rows = rows_of(spark, world["root"] / "plain" / "matches", summary["run_id"])
    mine = {(r.probe_face_id, r.rank): (r.gallery_face_id, r.score, r.above_threshold) for r in spark_rows if r.rank}
    theirs = {
        (int(r.probe_face_id), int(r.rank)): (int(r.gallery_face_id), float(r.score), bool(r.above_threshold))
        for r in latest[latest["rank"].notna()].itertuples()
    }
    assert theirs == mine


@pytest.mark.data
def test_probe_archive_with_bad_files(spark, tmp_path: Path, shared_data: Path, default_pack) -> None:
    """Probes from a folder: embedded with the embed job's code, bad files kept as rows, rank 1 = same person."""
    import shutil

    from jobs.embed.config import EmbedConfig
    from jobs.embed.job import run_embed
    from tests.fixtures.images import bad_input_corpus

    people = [p for p in sorted((shared_data / "lfw" / "images").iterdir()) if len(list(p.glob("*.jpg"))) >= 3][:4]
    gallery_dir, probe_dir = tmp_path / "gallery", tmp_path / "probes"
    for person in people:
        images = sorted(person.glob("*.jpg"))
        (gallery_dir / person.name).mkdir(parents=True)
        (probe_dir / person.name).mkdir(parents=True)
        for image in images[:2]:
            shutil.copy(image, gallery_dir / person.name / image.name)
        shutil.copy(images[2], probe_dir / person.name / images[2].name)
    (probe_dir / "bad").mkdir()
    for name in ("truncated_jpeg", "random_bytes", "one_pixel"):
        (probe_dir / "bad" / f"{name}.jpg").write_bytes(bad_input_corpus()[name])
    labels = "embed.labels.subject_from_path=([^/!]+)/[^/]+$"
    gallery_faces = tmp_path / "gallery_faces"
    overrides = [f"embed.input.path={gallery_dir}", f"embed.table_path={gallery_faces}", labels]
    run_embed(load_config(EmbedConfig, None, overrides), spark)
    run_index(
        load_config(IndexConfig, None, [f"index.faces_table={gallery_faces}", f"index.index_dir={tmp_path / 'index'}"]),
        spark,
    )
    config = load_config(
        QueryConfig,
        None,
        [
            f"spark.data_root={tmp_path / 'data'}",
            "query.probes.kind=archive",
            f'query.probes.archive={{"path": "{probe_dir}", "glob": "*.jpg"}}',
            f"query.probes.probe_table={tmp_path / 'probe_faces'}",
            "query.probes.labels.subject_from_path=([^/!]+)/[^/]+$",
            f"query.index_dir={tmp_path / 'index'}",
            "query.k=3",
        ],
    )
    summary = run_query(config, spark)
    assert summary["probe_files_seen"] == len(people) + 3 and summary["probes_searched"] >= len(people)
    matches = spark.read.format("delta").load(summary["outputs"]["matches_table"]).collect()
    failed = {Path(r.probe_source_path).name: r.probe_status for r in matches if r.rank is None}
    assert failed == {
        "truncated_jpeg.jpg": "decode_error",
        "random_bytes.jpg": "unsupported_format",
        "one_pixel.jpg": "too_small",
    }
    first = {r.probe_source_path: r for r in matches if r.rank == 1 and r.probe_subject_id is not None}
    assert {Path(p).parent.name for p in first} == {p.name for p in people}
    hits = [r.gallery_subject_id == r.probe_subject_id for r in first.values()]
    assert sum(hits) >= len(people) - 1  # the default pack is 98.9% on LFW pairs: one miss is possible
    again = run_query(config, spark)  # the probes are known now: nothing is embedded twice
    assert (
        again["probe_files_skipped_known"] == len(people) + 3 and again["probes_searched"] == summary["probes_searched"]
    )
