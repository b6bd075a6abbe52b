"""Erasure on real LFW faces: one person is forgotten from a 200-person gallery with probes and a query
run. Checked independently of the job's own verifier: raw Parquet files, raw shard files, a new query,
everyone else's results, the erasure record, a crashed-then-rerun erasure, selectors that match nothing
or are malformed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli_main
from jobs.common.config import load_config
from jobs.common.erasures import id_digest
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from jobs.forget import job as forget_job
from jobs.forget.config import ForgetConfig
from jobs.forget.job import run_forget
from jobs.forget.verify import shard_contents
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.query.config import QueryConfig
from jobs.query.job import run_query
from tests.fixtures.worlds import copy_world

pytestmark = [pytest.mark.slow, pytest.mark.data]

TARGET = "Aaron_Peirsol"
OTHERS_PROBED = ["Abdoulaye_Wade", "Abdullah_Gul", "Adam_Sandler", "Al_Gore"]


@pytest.fixture(scope="module")
def world(spark, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 people (two photos of the target, one of everyone else) embedded and indexed; probes: the
    target's other photos and second photos of four others, queried once."""
    root = tmp_path_factory.mktemp("forget-world")
    lfw = shared_data / "lfw" / "images"
    people = [p.name for p in sorted(lfw.iterdir()) if p.name != TARGET][:199] + [TARGET]
    for person in people:
        photos = sorted((lfw / person).glob("*.jpg"))
        for photo in photos[: 2 if person == TARGET else 1]:
            (root / "gallery" / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, root / "gallery" / person / photo.name)
        probes = photos[2:4] if person == TARGET else photos[1:2] if person in OTHERS_PROBED else []
        for photo in probes:
            (root / "probes" / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, root / "probes" / person / photo.name)
    run_embed(embed_config(root), spark)
    index_flags = [f"index.faces_table={root / 't' / 'faces'}", f"index.index_dir={root / 'index'}", "index.shards=2"]
    run_index(load_config(IndexConfig, None, [*shared(root), *index_flags]), spark)
    run_query(query_config(root), spark)
    return root


def shared(root: Path) -> list[str]:
    return [f"spark.data_root={root / 'data'}", f"runs_table={root / 't' / 'runs'}"]


def embed_config(root: Path) -> EmbedConfig:
    return load_config(
        EmbedConfig,
        None,
        [*shared(root), f"embed.input.path={root / 'gallery'}", f"embed.table_path={root / 't' / 'faces'}",
         "embed.labels.subject_from_path=([^/]+)/[^/]+$"],
    )  # fmt: skip


def query_config(root: Path) -> QueryConfig:
    return load_config(
        QueryConfig,
        None,
        [
            *shared(root),
            "query.probes.kind=archive",
            "query.probes.archive.kind=dir",
            f"query.probes.archive.path={root / 'probes'}",
            "query.probes.labels.subject_from_path=([^/]+)/[^/]+$",
            f"query.probes.probe_table={root / 't' / 'probe_faces'}",
            f"query.index_dir={root / 'index'}",
            f"query.matches_table={root / 't' / 'matches'}",
            f"query.identities_table={root / 't' / 'identities'}",
            "query.k=5",
        ],
    )


def forget_flags(root: Path, *extra: str) -> list[str]:
    t = root / "t"
    return [
        *shared(root),
        "forget.selector.kind=subject_ids",
        f"forget.selector.values=[{TARGET}]",
        f"forget.faces_tables=[{t / 'faces'}]",
        f"forget.probe_tables=[{t / 'probe_faces'}]",
        f"forget.matches_tables=[{t / 'matches'}]",
        f"forget.identities_tables=[{t / 'identities'}]",
        f"forget.index_dirs=[{root / 'index'}]",
        f"erasures_table={t / 'erasures'}",
        *extra,
    ]


def table_rows(spark, path: Path) -> list:
    return spark.read.format("delta").load(str(path)).collect()


def target_data(spark, root: Path) -> tuple[set[int], list[np.ndarray]]:
    ids, vectors = set(), []
    for table in ("faces", "probe_faces"):
        for row in table_rows(spark, root / "t" / table):
            if row.subject_id == TARGET:
                ids.add(row.face_id)
                if row.embedding is not None:
                    vectors.append(np.array(row.embedding, np.float32))
    return ids, vectors


def raw_hits(root: Path, ids: set[int], vectors: list[np.ndarray]) -> list[str]:
    """Every Parquet file and shard under the world, read raw, that holds a target id or vector."""
    hits = []
    wanted = {v.tobytes() for v in vectors}
    for path in (root / "t").rglob("*.parquet"):
        if "_delta_log" in path.parts:
            continue
        table = pq.read_table(path)
        for column in table.column_names:
            if column.endswith("face_id") and ids & {v for v in table.column(column).to_pylist() if v is not None}:
                hits.append(str(path))
        if "embedding" in table.column_names:
            if any(
                v is not None and np.array(v, np.float32).tobytes() in wanted
                for v in table.column("embedding").to_pylist()
            ):
                hits.append(str(path))
    for path in (root / "index").glob("*.faiss"):
        shard_ids, shard_vectors = shard_contents(path)
        if ids & set(shard_ids.tolist()) or any(v.astype(np.float32).tobytes() in wanted for v in shard_vectors):
            hits.append(str(path))
    for path in (root / "index").glob("*.arrow"):  # templates, face -> subject lookups: ids and the name
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        held = set(table.column("face_id").to_pylist()) if "face_id" in table.column_names else set()
        names = table.column("subject_id").cast(pa.string()).to_pylist() if "subject_id" in table.column_names else []
        if ids & held or TARGET in names:
            hits.append(str(path))
    return hits


def others_top_k(spark, root: Path, run_id: str) -> dict[tuple[str, int], list[int]]:
    """Each non-target probe face's candidates in rank order, keyed by its file name and face_id (a photo
    with two faces has two lists: merged, their order would be the order Spark returned the rows in)."""
    rows = [r for r in table_rows(spark, root / "t" / "matches") if r.run_id == run_id and r.rank is not None]
    by_probe: dict[tuple[str, int], list] = {}
    for r in sorted(rows, key=lambda r: (r.probe_source_path, r.probe_face_id, r.rank)):
        if r.probe_subject_id != TARGET:
            by_probe.setdefault((Path(r.probe_source_path).name, r.probe_face_id), []).append(r.gallery_face_id)
    return by_probe


def test_forgetting_one_person_everywhere(spark, world: Path, tmp_path: Path) -> None:
    root = copy_world(world, tmp_path / "w")
    ids, vectors = target_data(spark, root)
    assert len(ids) >= 4 and vectors and raw_hits(root, ids, vectors)  # the check can fail: data is there
    before_run = next(r.run_id for r in table_rows(spark, root / "t" / "runs") if r.job == "query")
    before = others_top_k(spark, root, before_run)
    others_before = sorted(r.face_id for r in table_rows(spark, root / "t" / "faces") if r.subject_id != TARGET)

    summary = run_forget(
        load_config(ForgetConfig, None, forget_flags(root, "forget.purge_history=true", "forget.retention_hours=0")),
        spark,
    )
    assert summary["changed"] and summary["matched"] == len(ids)
    assert sum(i["vectors_removed"] for i in summary["indexes"]) == 2  # the target's two gallery faces
    assert summary["verification"]["current_files_with_erased_data"] == []
    assert summary["verification"]["history_files_with_erased_data"] == []
    assert summary["verification"]["shards_with_erased_data"] == []
    # (a) (b) independently of the job's verifier: no file holds an id or a vector of the target
    assert raw_hits(root, ids, vectors) == []
    # (e) the erasure record: counts, digests only
    registered, record = sorted(table_rows(spark, root / "t" / "erasures"), key=lambda r: r.phase != "registered")
    assert registered.phase == "registered" and record.phase == "completed"
    assert registered.erasure_id == record.erasure_id and registered.subject_sha256 == record.subject_sha256
    assert TARGET not in json.dumps(registered.asDict(), default=str)
    assert record.verified and record.purged_history and TARGET not in json.dumps(record.asDict(), default=str)
    assert {t.role: t.rows_deleted for t in record.tables}["faces"] == 2
    # (d) everyone else's rows are unchanged
    assert sorted(r.face_id for r in table_rows(spark, root / "t" / "faces")) == others_before
    # (c) a new query with the target's other photos returns none of theirs; others keep their top k
    after = run_query(query_config(root), spark)
    new_rows = [r for r in table_rows(spark, root / "t" / "matches") if r.run_id == after["run_id"]]
    assert new_rows and not [r for r in new_rows if r.gallery_subject_id == TARGET or r.gallery_face_id in ids]
    # (d) everyone else's searches: the remaining probe faces against the erased index
    rest = load_config(
        QueryConfig,
        None,
        [*shared(root), f"query.probes.faces_table={root / 't' / 'probe_faces'}", f"query.index_dir={root / 'index'}",
         f"query.matches_table={root / 't' / 'matches'}", f"query.identities_table={root / 't' / 'identities'}",
         "query.k=5"],
    )  # fmt: skip
    now = others_top_k(spark, root, run_query(rest, spark)["run_id"])
    assert set(now) == set(before)
    for probe, top in before.items():
        kept = [face for face in top if face not in ids]
        assert now[probe][: len(kept)] == kept


def test_a_crashed_erasure_reruns_to_the_same_state(spark, world: Path, tmp_path: Path, monkeypatch) -> None:
    clean, crashed = copy_world(world, tmp_path / "clean"), copy_world(world, tmp_path / "crashed")
    ids, vectors = target_data(spark, crashed)
    run_forget(load_config(ForgetConfig, None, forget_flags(clean)), spark)

    def crash(*args, **kwargs):
        raise RuntimeError("killed while rewriting the index")

    monkeypatch.setattr(forget_job, "erase_from_index", crash)
    with pytest.raises(RuntimeError, match="killed"):
        run_forget(load_config(ForgetConfig, None, forget_flags(crashed)), spark)
    assert raw_hits(crashed, ids, vectors)  # the crash left the index holding the vectors
    monkeypatch.undo()
    rerun = run_forget(
        load_config(ForgetConfig, None, forget_flags(crashed, "forget.purge_history=true", "forget.retention_hours=0")),
        spark,
    )
    assert rerun["verification"]["shards_with_erased_data"] == [] and raw_hits(crashed, ids, vectors) == []
    for table in ("faces", "probe_faces", "matches", "identities"):

        def key(row):
            return json.dumps(row.asDict(recursive=True), sort_keys=True, default=str)

        assert sorted(map(key, table_rows(spark, crashed / "t" / table))) == sorted(
            map(key, table_rows(spark, clean / "t" / table))
        )
    clean_ids = sorted(int(i) for p in (clean / "index").glob("*.faiss") for i in shard_contents(p)[0])
    assert clean_ids == sorted(int(i) for p in (crashed / "index").glob("*.faiss") for i in shard_contents(p)[0])


def test_a_selector_matching_nothing_changes_nothing(spark, world: Path, tmp_path: Path, capsys) -> None:
    root = copy_world(world, tmp_path / "w")
    versions = {
        p.name: sorted((p / "_delta_log").glob("*.json")) for p in (root / "t").iterdir() if (p / "_delta_log").is_dir()
    }
    flags = [
        f if not f.startswith("forget.selector.values") else "forget.selector.values=[Nobody_At_All]"
        for f in forget_flags(root)
    ]
    summary = run_forget(load_config(ForgetConfig, None, flags), spark)
    assert summary["matched"] == 0 and summary["changed"] is False and summary["registered"]
    after = {
        p.name: sorted((p / "_delta_log").glob("*.json")) for p in (root / "t").iterdir() if (p / "_delta_log").is_dir()
    }
    unchanged = ("runs", "erasures")
    assert {k: v for k, v in after.items() if k not in unchanged} == {
        k: v for k, v in versions.items() if k not in unchanged
    }
    # The erasure stands for what is embedded later, though nothing matched now.
    [row] = [r for r in table_rows(spark, root / "t" / "erasures") if r.erasure_id == summary["erasure_id"]]
    assert row.phase == "registered" and row.subject_sha256 == [id_digest("Nobody_At_All")]
    # The run that matched nothing still leaves its runs row (run_job writes it, as for every job).
    runs = [r for r in table_rows(spark, Path(summary.runs_table)) if r.run_id == summary.run_id]
    assert [(r.job, r.status) for r in runs] == [("forget", "ok")] and summary.runs_version >= 0

    malformed = ["forget", *(f"--set={f}" for f in forget_flags(root)), "--set=forget.selector.kind=face_ids"]
    assert cli_main(malformed) == 2
    out, err = capsys.readouterr()
    assert "forget.selector.values" in err and json.loads(out.splitlines()[-1])["status"] == "failed"


def test_retention_erases_search_history_older_than_the_limit(spark, world: Path, tmp_path: Path) -> None:
    root = copy_world(world, tmp_path / "w")
    gallery = sorted(r.face_id for r in table_rows(spark, root / "t" / "faces"))
    flags = [f for f in forget_flags(root) if not f.startswith("forget.selector")]
    summary = run_forget(
        load_config(ForgetConfig, None, [*flags, "forget.selector=null", "forget.older_than=0h"]), spark
    )
    deleted = {t["role"]: t["rows_deleted"] for t in summary["tables"]}
    assert deleted["matches"] > 0 and deleted["probe_faces"] > 0 and deleted["faces"] == 0
    assert table_rows(spark, root / "t" / "matches") == [] and table_rows(spark, root / "t" / "probe_faces") == []
    assert sorted(r.face_id for r in table_rows(spark, root / "t" / "faces")) == gallery  # the gallery stays
