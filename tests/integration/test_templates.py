"""Identity templates through the jobs: built by the index (one per subject, the normalised mean of its
faces), rebuilt by an update, removed by an erasure; searched by `query.search=subjects|both` with the same
top-k as a numpy brute force over templates computed here independently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from jobs.common.config import load_config
from jobs.common.errors import UserError
from jobs.forget.config import ForgetConfig
from jobs.forget.job import run_forget
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.query.config import QueryConfig
from jobs.query.job import run_query
from jobs.shards.manifest import read_manifest
from jobs.shards.templates import load_templates
from tests.fixtures.faces import clustered, write_faces

pytestmark = pytest.mark.slow

FACES, SUBJECTS, K = 600, 120, 5


def reference_templates(vectors: np.ndarray, subjects: list) -> dict:
    out = {}
    for subject in {s for s in subjects if s is not None}:
        total = vectors[[i for i, s in enumerate(subjects) if s == subject]].astype(np.float64).sum(axis=0)
        out[subject] = total / np.linalg.norm(total)
    return out


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("templates")
    vectors = clustered(FACES, dim=16, seed=5)
    subjects = [f"s{i % SUBJECTS:03d}" for i in range(FACES)]
    subjects[-7:] = [None] * 7  # faces without a subject have no template
    ids = np.arange(1, FACES + 1, dtype=np.int64) * 7919
    write_faces(spark, root / "faces", ids, vectors, subjects=subjects)
    probes = clustered(40, dim=16, seed=6)
    probe_ids = np.arange(9_000_000, 9_000_040, dtype=np.int64)
    statuses = ["ok"] * 36 + ["no_face"] * 4
    write_faces(spark, root / "probes", probe_ids, probes, subjects=["p"] * 40, statuses=statuses)
    return {
        "root": root,
        "vectors": vectors,
        "subjects": subjects,
        "ids": ids,
        "probes": probes[:36],
        "probe_ids": probe_ids[:36],
    }


def index(spark, world: dict, *extra: str) -> dict:
    root = world["root"]
    config = load_config(
        IndexConfig,
        None,
        [
            f"index.faces_table={root / 'faces'}",
            f"index.index_dir={root / 'index'}",
            "index.templates=true",
            f"runs_table={root / 'runs'}",
            *extra,
        ],
    )
    return run_index(config, spark)


def query(spark, world: dict, search: str, name: str) -> tuple[dict, list, list]:
    root = world["root"]
    config = load_config(
        QueryConfig,
        None,
        [
            f"query.probes.faces_table={root / 'probes'}",
            f"query.index_dir={root / 'index'}",
            f"query.matches_table={root / name / 'matches'}",
            f"query.identities_table={root / name / 'identities'}",
            f"query.search={search}",
            f"query.k={K}",
            f"runs_table={root / 'runs'}",
        ],
    )
    result = run_query(config, spark)
    read = lambda table: spark.read.format("delta").load(str(root / name / table)).collect()  # noqa: E731
    return result, read("matches"), read("identities")


def assert_templates_match(world: dict, vectors: np.ndarray, subjects: list) -> None:
    manifest = read_manifest(world["root"] / "index")
    templates = load_templates(world["root"] / "index", manifest)
    expected = {s: v for s, v in reference_templates(vectors, subjects).items() if s is not None}
    assert sorted(templates.subjects.tolist()) == sorted(expected)
    for subject, vector, faces in zip(templates.subjects, templates.vectors, templates.faces):
        assert np.allclose(vector, expected[subject], atol=1e-5)
        assert faces == sum(1 for s in subjects if s == subject)
    assert manifest.templates == len(expected) and manifest.template_faces == sum(s is not None for s in subjects)


def test_index_builds_one_template_per_subject(spark, world: dict) -> None:
    summary = index(spark, world)
    assert summary["templates"] == SUBJECTS
    assert_templates_match(world, world["vectors"], world["subjects"])


def test_subjects_search_equals_brute_force_and_both_keeps_the_faces(spark, world: dict) -> None:
    index(spark, world)
    reference = reference_templates(world["vectors"], world["subjects"])
    names = sorted(reference)
    matrix = np.stack([reference[n] for n in names])
    result, matches, identities = query(spark, world, "subjects", "subjects")
    assert result["search"] == "subjects"
    assert {r.search for r in identities} == {"subjects"}
    assert all(r.rank is None for r in matches) and len(matches) == 4  # the probes without a face, accounted
    by_probe: dict[int, list] = {}
    for row in identities:
        by_probe.setdefault(row.probe_face_id, []).append(row)
    assert sorted(by_probe) == sorted(world["probe_ids"].tolist())
    for probe_id, probe in zip(world["probe_ids"], world["probes"]):
        sims = matrix @ probe.astype(np.float64)
        order = np.argsort(-sims, kind="stable")[:K]
        rows = sorted(by_probe[int(probe_id)], key=lambda r: r.rank)
        assert [r.gallery_subject_id for r in rows] == [names[i] for i in order]
        assert np.allclose([r.best_score for r in rows], sims[order], atol=1e-5)
        assert [r.candidate_faces for r in rows] == [world["subjects"].count(r.gallery_subject_id) for r in rows]
        assert all(r.gallery_subjects == SUBJECTS for r in rows)
    _, both_matches, both_identities = query(spark, world, "both", "both")
    assert {r.search for r in both_identities} == {"faces", "subjects"}
    assert len([r for r in both_matches if r.rank is not None]) == 36 * K


def test_update_rebuilds_templates_and_forget_removes_the_person(spark, world: dict) -> None:
    root = world["root"]
    index(spark, world)
    more = clustered(10, dim=16, seed=7)
    new_ids = np.arange(50_000_001, 50_000_011, dtype=np.int64)
    new_subjects = ["s000"] * 5 + ["new-person"] * 5
    write_faces(spark, root / "faces", new_ids, more, subjects=new_subjects)
    index(spark, world, "index.update=true")
    vectors = np.concatenate([world["vectors"], more])
    subjects = world["subjects"] + new_subjects
    assert_templates_match(world, vectors, subjects)

    config = load_config(
        ForgetConfig,
        None,
        [
            "forget.selector.kind=subject_ids",
            "forget.selector.values=[new-person]",
            f"forget.faces_tables=[{root / 'faces'}]",
            f"forget.index_dirs=[{root / 'index'}]",
            f"runs_table={root / 'runs'}",
            f"erasures_table={root / 'erasures'}",
        ],
    )
    run_forget(config, spark)
    kept = [i for i, s in enumerate(subjects) if s != "new-person"]
    assert_templates_match(world, vectors[kept], [subjects[i] for i in kept])
    manifest = read_manifest(root / "index")
    template_files = sorted(p.name for p in Path(root / "index").glob("templates.*.arrow"))
    assert template_files == [manifest.templates_file]  # no older templates file still averages the person in
    # no face -> subject file (current or older) still names the person or one of their faces
    erased = set(new_ids[5:].tolist())
    for path in Path(root / "index").glob("face_subjects.*.arrow"):
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        assert not erased & set(table.column("face_id").to_pylist()), path.name
        assert "new-person" not in table.column("subject_id").cast(pa.string()).to_pylist(), path.name
    assert manifest.face_subjects_file and (Path(root / "index") / manifest.face_subjects_file).exists()


def test_a_subjects_search_on_an_index_without_templates_is_refused(spark, world: dict, tmp_path: Path) -> None:
    root = world["root"]
    run_index(
        load_config(
            IndexConfig, None, [f"index.faces_table={root / 'faces'}", f"index.index_dir={tmp_path / 'plain'}"]
        ),
        spark,
    )
    config = load_config(
        QueryConfig,
        None,
        [
            f"query.probes.faces_table={root / 'probes'}",
            f"query.index_dir={tmp_path / 'plain'}",
            f"query.matches_table={tmp_path / 'm'}",
            f"query.identities_table={tmp_path / 'i'}",
            "query.search=subjects",
        ],
    )
    with pytest.raises(UserError, match="has no templates"):
        run_query(config, spark)
