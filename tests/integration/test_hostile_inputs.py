"""Hostile archives and concurrent writers through the real jobs on the shared local Spark: every entry
is one row, the accounting holds, nothing committed is lost or duplicated when writers race."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from jobs.common.config import load_config
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.query.config import QueryConfig
from jobs.query.job import run_query
from tests.fixtures.faces import clustered, write_faces
from tests.fixtures.hostile import LATIN1_NAME, fs_name, hostile_tar

pytestmark = [pytest.mark.slow]


def embed_config(input_path: Path, table: Path, *extra: str) -> EmbedConfig:
    return load_config(
        EmbedConfig,
        None,
        [f"embed.input.path={input_path}", f"embed.table_path={table}", "embed.files_per_task=3", *extra],
    )


def lfw(shared_data: Path, person: str, count: int) -> list[Path]:
    return sorted((shared_data / "lfw" / "images" / person).glob("*.jpg"))[:count]


def rows(spark, table: Path) -> list:
    return spark.read.format("delta").load(str(table)).collect()


@pytest.mark.data
def test_hostile_tar_every_member_is_a_row_and_reruns_add_nothing(spark, tmp_path: Path, shared_data: Path) -> None:
    first, second = (p.read_bytes() for p in [*lfw(shared_data, "Zico", 1), *lfw(shared_data, "AJ_Cook", 1)])
    third = lfw(shared_data, "Aaron_Peirsol", 1)[0].read_bytes()
    tar_path = tmp_path / "hostile.tar"
    hostile_tar(tar_path, first, second, latin_image=third)
    table = tmp_path / "faces"
    summary = run_embed(embed_config(tar_path, table, "embed.input.kind=tar"), spark)
    assert summary["files_seen"] == 8 == summary["files_processed"] + summary["files_skipped_known"]
    by_member: dict[str, list] = {}
    for row in rows(spark, table):
        by_member.setdefault(row.source_path.split("!", 1)[1], []).append(row)
    duplicates = sorted(name for name in by_member if name.startswith("dup/same.jpg#offset="))
    assert len(duplicates) == 2
    assert len({by_member[name][0].image_id for name in duplicates}) == 2  # both images, not the last twice
    assert all(r.status == "ok" for name in duplicates for r in by_member[name])
    latin = by_member["latin/caf\\xe9.jpg"]
    assert latin[0].status == "ok" and bytes(latin[0].source_path_raw).endswith(b"!latin/" + LATIN1_NAME)
    for name in ["links/hard_to_nothing.jpg", "links/soft.jpg", "devices/fifo.jpg", "devices/zero.jpg"]:
        assert [r.status for r in by_member[name]] == ["not_a_file"], name
    # the hard link's content is the second image, already in the table under the earlier member
    assert summary["duplicate_content_files"] == 1  # the hard link
    assert summary["by_status"]["not_a_file"] == 4

    again = run_embed(embed_config(tar_path, table, "embed.input.kind=tar"), spark)
    assert again["rows_written"] == 0 and again["files_seen"] == 8


@pytest.mark.data
def test_non_utf8_file_name_in_a_folder_is_embedded(spark, tmp_path: Path, shared_data: Path) -> None:
    root = tmp_path / "legacy"
    root.mkdir()
    source = lfw(shared_data, "Zico", 1)[0]
    shutil.copy(source, os.path.join(str(root), fs_name(LATIN1_NAME)))
    os.mkfifo(root / "stuck.jpg")
    table = tmp_path / "faces"
    summary = run_embed(embed_config(root, table), spark)
    assert summary["files_seen"] == 2 and summary["faces"] == 1
    by_name = {Path(r.source_path).name: r for r in rows(spark, table)}
    assert by_name["caf\\xe9.jpg"].status == "ok"
    assert bytes(by_name["caf\\xe9.jpg"].source_path_raw) == os.fsencode(root) + b"/" + LATIN1_NAME
    assert by_name["stuck.jpg"].status == "not_a_file" and by_name["stuck.jpg"].source_path_raw is None


def run_together(*jobs: Callable[[], dict]) -> list[dict]:
    """Start every job at once in its own thread (one SparkSession, as Spark allows) and wait for all."""
    results: list[dict | BaseException] = [RuntimeError("did not finish")] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(position: int) -> None:
        start.wait()
        try:
            results[position] = jobs[position]()
        except BaseException as error:  # noqa: BLE001 - reported below with the job's position
            results[position] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # each job ends by itself: success, or an error captured above
    failures = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert not failures, failures
    return results  # type: ignore[return-value]


@pytest.mark.data
def test_concurrent_embeds_into_one_table_all_land_once(spark, tmp_path: Path, shared_data: Path) -> None:
    archives = []
    for person in ["Zico", "AJ_Cook", "Aaron_Peirsol"]:
        folder = tmp_path / "archives" / person / person
        folder.mkdir(parents=True)
        for image in lfw(shared_data, person, 3):
            shutil.copy(image, folder / image.name)
        archives.append(folder.parent)
    shared_copy = lfw(shared_data, "Zico", 1)[0]
    shutil.copy(shared_copy, archives[1] / "AJ_Cook" / "copy_of_zico.jpg")  # the same content in two runs

    table = tmp_path / "faces"
    extra = ("embed.files_per_commit=2",)  # several commits per run: many chances to collide
    together = run_together(*(lambda a=a: run_embed(embed_config(a, table, *extra), spark) for a in archives))
    landed = rows(spark, table)
    assert len({r.face_id for r in landed}) == len(landed)  # nothing duplicated
    assert {r.image_id for r in landed} == {
        hashlib.sha256(p.read_bytes()).hexdigest() for a in archives for p in a.rglob("*.jpg")
    }  # nothing lost
    assert sum(s["files_seen"] for s in together) == sum(len(list(a.rglob("*.jpg"))) for a in archives)

    clean = tmp_path / "clean"
    for archive in archives:
        run_embed(embed_config(archive, clean), spark)
    assert sorted(r.face_id for r in landed) == sorted(r.face_id for r in rows(spark, clean))


def test_concurrent_queries_share_their_tables(spark, tmp_path: Path) -> None:
    gallery_ids = np.arange(1, 401, dtype=np.int64) * 7919
    write_faces(
        spark, tmp_path / "gallery", gallery_ids, clustered(400, seed=3), subjects=[f"s{i % 80}" for i in range(400)]
    )
    run_index(
        load_config(
            IndexConfig,
            None,
            [f"index.faces_table={tmp_path / 'gallery'}", f"index.index_dir={tmp_path / 'index'}", "index.shards=2"],
        ),
        spark,
    )
    write_faces(spark, tmp_path / "probes", np.arange(10**6, 10**6 + 30, dtype=np.int64), clustered(30, seed=4))

    def query() -> dict:
        config = load_config(
            QueryConfig,
            None,
            [
                f"spark.data_root={tmp_path / 'data'}",
                f"query.probes.faces_table={tmp_path / 'probes'}",
                f"query.index_dir={tmp_path / 'index'}",
                f"query.matches_table={tmp_path / 'matches'}",
                f"query.identities_table={tmp_path / 'identities'}",
                f"runs_table={tmp_path / 'runs'}",
                "query.k=5",
            ],
        )
        return run_query(config, spark)

    summaries = run_together(query, query, query)
    matches = spark.read.format("delta").load(str(tmp_path / "matches"))
    for summary in summaries:
        assert matches.where(f"run_id = '{summary['run_id']}'").count() == 30 * 5
    assert matches.count() == 3 * 30 * 5
    runs = spark.read.format("delta").load(str(tmp_path / "runs")).collect()
    assert sorted(r.run_id for r in runs if r.status == "ok") == sorted(s["run_id"] for s in summaries)


@pytest.mark.data
def test_a_refused_run_leaves_no_table_behind(spark, tmp_path: Path, shared_data: Path) -> None:
    from jobs.common.errors import UserError

    table = tmp_path / "faces"
    config = embed_config(
        shared_data / "lfw" / "images" / "Zico", table, f"embed.labels.table.path={tmp_path / 'nope.csv'}"
    )
    with pytest.raises(UserError, match="embed.labels.table.path"):
        run_embed(config, spark)
    assert not table.exists()  # no empty version 0 of a table nobody asked to create yet


def test_racing_first_commits_of_a_new_faces_table_all_succeed(spark, tmp_path: Path) -> None:
    from jobs.faces.table import ensure_faces_table

    # Delta calls a folder whose first commit is still in flight "not empty and not a table" (CI saw this):
    # every racer must wait for that commit instead of failing. Several rounds make the race likely.
    for round_number in range(10):
        table = str(tmp_path / f"faces_{round_number}")
        run_together(*(lambda t=table: ensure_faces_table(spark, t) or {} for _ in range(3)))
        assert spark.read.format("delta").load(table).count() == 0


def test_a_folder_of_other_files_is_refused_as_the_faces_table(spark, tmp_path: Path) -> None:
    from jobs.common.errors import UserError
    from jobs.faces.table import ensure_faces_table

    table = tmp_path / "not_a_table"
    table.mkdir()
    (table / "notes.txt").write_text("someone else's files")
    with pytest.raises(UserError, match="embed.table_path .* holds files but is not a Delta table"):
        ensure_faces_table(spark, str(table))
    assert sorted(p.name for p in table.iterdir()) == ["notes.txt"]
