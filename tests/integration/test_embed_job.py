"""The embed job on the shared local Spark: accounting, statuses, labels, idempotence, bad archives."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from jobs.common.config import load_config
from jobs.common.errors import UserError
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from tests.fixtures.images import bad_input_corpus

pytestmark = [pytest.mark.slow, pytest.mark.data]

PEOPLE = ["Aaron_Peirsol", "AJ_Cook", "Zico"]


def make_config(input_path: Path, table_path: Path, *extra: str) -> EmbedConfig:
    return load_config(
        EmbedConfig,
        None,
        [
            f"embed.input.path={input_path}",
            f"embed.table_path={table_path}",
            "embed.labels.subject_from_path=([^/!]+)/[^/]+$",
            "embed.files_per_task=4",
            *extra,
        ],
    )


def faces(spark, table_path: Path) -> list:
    return spark.read.format("delta").load(str(table_path)).collect()


def table_files(spark, table_path: Path) -> set[str]:
    """The names of the data files the table's current version holds."""
    return {Path(uri).name for uri in spark.read.format("delta").load(str(table_path)).inputFiles()}


def parquet_files(table_path: Path) -> set[str]:
    return {path.name for path in table_path.glob("*.parquet")}


@pytest.fixture()
def archive(tmp_path: Path, shared_data: Path) -> Path:
    root = tmp_path / "archive"
    for person in PEOPLE:
        (root / person).mkdir(parents=True)
        for image in sorted((shared_data / "lfw" / "images" / person).glob("*.jpg"))[:2]:
            shutil.copy(image, root / person / image.name)
    (root / "bad").mkdir()
    for name, data in bad_input_corpus().items():
        (root / "bad" / f"{name}.jpg").write_bytes(data)
    (root / "bad" / "dangling.jpg").symlink_to(root / "nowhere.jpg")  # listed, but cannot be read
    return root


def test_every_file_is_accounted_for_and_reruns_add_nothing(
    spark, archive: Path, tmp_path: Path, shared_data: Path
) -> None:
    table = tmp_path / "faces"
    original = archive / "Zico" / sorted(p.name for p in (archive / "Zico").iterdir())[0]
    shutil.copy(original, archive / "Zico" / "dup_copy.jpg")  # same bytes: one image, kept once
    files = sorted(p for p in archive.rglob("*.jpg"))
    summary = run_embed(make_config(archive, table), spark)
    rows = faces(spark, table)
    assert summary["files_seen"] == len(files) == summary["files_processed"]
    assert summary["duplicate_content_files"] == 1
    recorded = {str(p.absolute()) for p in files} - {str(archive / "Zico" / "dup_copy.jpg")}
    assert {row.source_path for row in rows} == recorded  # the first path in sorted order wins
    assert len({row.face_id for row in rows}) == len(rows)
    by_path = {Path(row.source_path).name: row for row in rows if row.face_index == -1}
    assert by_path["dangling.jpg"].status == "read_error"
    assert by_path["empty.jpg"].status == "decode_error"
    assert by_path["claims_30000x30000.jpg"].status == "too_large"
    assert by_path["one_pixel.jpg"].status == "too_small"
    ok = [row for row in rows if row.status == "ok"]
    assert {row.subject_id for row in ok} == set(PEOPLE)
    assert all(len(row.embedding) == 128 and len(row.landmarks) == 10 for row in ok)
    assert summary["faces"] == len(ok) and summary["by_status"]["ok"] == len(ok)

    again = run_embed(make_config(archive, table), spark)
    assert again["rows_written"] == 0
    assert again["files_skipped_known"] == len(files) - 1  # the unreadable file is tried again
    assert sorted(r.face_id for r in faces(spark, table)) == sorted(r.face_id for r in rows)

    shutil.copy(files[0], archive / "Zico" / "copy_of_known.jpg")
    new_image = sorted((shared_data / "lfw" / "images" / "Zico").glob("*.jpg"))[2]
    shutil.copy(new_image, archive / "Zico" / new_image.name)
    third = run_embed(make_config(archive, table), spark)
    assert third["files_processed"] == 2  # the new image and the unreadable file
    assert third["files_skipped_known"] == len(files)  # old files and the copy of known content
    new_rows = [r for r in faces(spark, table) if r.source_path.endswith(new_image.name)]
    assert new_rows and all(row.status == "ok" for row in new_rows)


def test_tar_members_are_streamed_and_unsafe_names_refused(spark, tmp_path: Path, shared_data: Path) -> None:
    tar_path = tmp_path / "photos.tar"
    image = (shared_data / "lfw" / "images" / "Zico" / "Zico_0001.jpg").read_bytes()
    with tarfile.open(tar_path, "w") as archive:
        for name in ["Zico/Zico_0001.jpg", "../escape.jpg", "/etc/absolute.jpg"]:
            info = tarfile.TarInfo(name)
            info.size = len(image)
            archive.addfile(info, io.BytesIO(image))
    table = tmp_path / "faces"
    summary = run_embed(make_config(tar_path, table, "embed.input.kind=tar"), spark)
    rows = {row.source_path.split("!", 1)[1]: row for row in faces(spark, table)}
    assert rows["Zico/Zico_0001.jpg"].status == "ok" and rows["Zico/Zico_0001.jpg"].subject_id == "Zico"
    assert rows["../escape.jpg"].status == "unsafe_member"
    assert rows["/etc/absolute.jpg"].status == "unsafe_member"
    assert summary["files_seen"] == 3
    assert not (tmp_path / "escape.jpg").exists() and not Path("/etc/absolute.jpg").exists()


def test_table_of_bytes_input(spark, tmp_path: Path, shared_data: Path) -> None:
    images = sorted((shared_data / "lfw" / "images" / "Aaron_Peirsol").glob("*.jpg"))[:2]
    source = tmp_path / "source"
    spark.createDataFrame(
        [(p.name, p.read_bytes()) for p in images] + [("broken", b"xx")], "path STRING, content BINARY"
    ).write.format("delta").save(str(source))
    table = tmp_path / "faces"
    summary = run_embed(
        make_config(source, table, "embed.input.kind=table", "embed.labels.subject_from_path=null"), spark
    )
    statuses = sorted(row.status for row in faces(spark, table))
    assert summary["files_seen"] == 3 and statuses == ["ok", "ok", "unsupported_format"]


@pytest.mark.parametrize("problem", ["missing", "empty", "wrong_columns"])
def test_bad_inputs_are_one_line_errors_and_keep_the_table(spark, archive: Path, tmp_path: Path, problem: str) -> None:
    table = tmp_path / "faces"
    run_embed(make_config(archive / "Zico", table), spark)
    before = sorted(r.face_id for r in faces(spark, table))
    if problem == "missing":
        config = make_config(tmp_path / "no_such_folder", table)
    elif problem == "empty":
        (tmp_path / "empty").mkdir()
        config = make_config(tmp_path / "empty", table)
    else:
        config = make_config(table, table, "embed.input.kind=table", "embed.input.bytes_column=pixels")
    with pytest.raises(UserError) as error:
        run_embed(config, spark)
    assert "embed.input" in str(error.value) and "\n" not in str(error.value)
    assert sorted(r.face_id for r in faces(spark, table)) == before


def test_labels_from_a_table_and_from_file_names(spark, tmp_path: Path, shared_data: Path) -> None:
    archive = tmp_path / "utk_like"
    (archive / "site_a").mkdir(parents=True)
    source = sorted((shared_data / "lfw" / "images" / "Zico").glob("*.jpg"))
    shutil.copy(source[0], archive / "site_a" / "30_1_2_20170109.jpg")
    shutil.copy(source[1], archive / "site_a" / "41_0_3_20170110.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,subject_id,camera\nsite_a/30_1_2_20170109.jpg,person-7,north\n")
    table = tmp_path / "faces"
    config = make_config(
        archive,
        table,
        "embed.labels.subject_from_path=null",
        r"embed.labels.attributes_from_name=^(?P<age>\d+)_(?P<gender>\d)_(?P<race>\d)_",
        f"embed.labels.table={{path: '{labels}', format: csv, attribute_columns: [camera]}}",
    )
    run_embed(config, spark)
    by_name = {Path(r.source_path).name: r for r in faces(spark, table) if r.status == "ok"}
    labelled, plain = by_name["30_1_2_20170109.jpg"], by_name["41_0_3_20170110.jpg"]
    assert labelled.subject_id == "person-7"
    assert labelled.attributes == {"age": "30", "gender": "1", "race": "2", "camera": "north"}
    assert plain.subject_id is None and plain.attributes == {"age": "41", "gender": "0", "race": "3"}


def test_labels_table_with_a_missing_column_is_refused(spark, tmp_path: Path, archive: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,who\nZico/Zico_0001.jpg,z\n")
    config = make_config(archive / "Zico", tmp_path / "faces", f"embed.labels.table={{path: '{labels}', format: csv}}")
    with pytest.raises(UserError, match=r"no column\(s\) \['path', 'subject_id'\]"):
        run_embed(config, spark)


def test_duplicate_content_across_commits_is_counted(spark, tmp_path: Path, shared_data: Path) -> None:
    archive = tmp_path / "dups"
    images = sorted((shared_data / "lfw" / "images" / "Zico").glob("*.jpg"))[:3]
    for folder in ("a", "b"):  # b/ holds copies of a/, committed in later chunks
        (archive / folder).mkdir(parents=True)
        for image in images:
            shutil.copy(image, archive / folder / image.name)
    table = tmp_path / "faces"
    summary = run_embed(make_config(archive, table, "embed.files_per_commit=2", "embed.files_per_task=1"), spark)
    paths = {r.source_path for r in faces(spark, table)}
    assert summary["files_seen"] == summary["files_processed"] == 6
    assert summary["duplicate_content_files"] == 3
    assert paths == {str(archive / "a" / image.name) for image in images}
    # the workers' files holding the copies were rewritten without them: no file outside the table is left
    assert "merge" not in summary["timings_s"]
    assert table_files(spark, table) == parquet_files(table)


def test_a_run_over_known_images_embeds_and_commits_nothing(spark, tmp_path: Path, shared_data: Path) -> None:
    folder = tmp_path / "known"
    folder.mkdir()
    for path in sorted((shared_data / "lfw" / "images" / "Zico").glob("*.jpg"))[:3]:
        shutil.copy(path, folder / path.name)
    table = tmp_path / "faces"
    first = run_embed(make_config(folder, table), spark)
    assert first["files_processed"] == 3 and "commit" in first["timings_s"]
    again = run_embed(make_config(folder, table), spark)
    assert again["files_skipped_known"] == 3 and again["files_processed"] == 0
    assert first["known_searched_by"] is None and again["known_searched_by"] == "driver"  # delta-rs, no JVM
    # the chunk was left out after the hash pass: no embedding job, no commit, no new table version
    assert not {"embed", "commit", "merge"} & set(again["timings_s"])
    assert again["outputs"]["faces_table_version"] == first["outputs"]["faces_table_version"]
    # one runs row a run: the runs table checkpoints inside every 100th commit, not every 10th run's
    runs_table = again["outputs"]["runs_table"]
    runs = spark.sql(f"DESCRIBE DETAIL delta.`{runs_table}`").collect()[0]
    assert runs.properties.get("delta.checkpointInterval") == "100"
    # the first runs row created the table through Spark; later ones are delta-rs appends (no JVM)
    writers = spark.sql(f"DESCRIBE HISTORY delta.`{runs_table}`").orderBy("version").collect()
    assert writers[0].engineInfo.startswith("Apache-Spark") and writers[-1].engineInfo.startswith("delta-rs")
    ids = {r.run_id for r in spark.read.format("delta").load(runs_table).collect()}
    assert {first["run_id"], again["run_id"]} <= ids and len(ids) == len(writers)
    # a table whose very first commit already holds the rows (another writer's) is not taken for empty
    copied = tmp_path / "copied"
    spark.read.format("delta").load(str(table)).write.format("delta").save(str(copied))
    into_copy = run_embed(make_config(folder, copied), spark)
    assert into_copy["files_skipped_known"] == 3 and into_copy["rows_written"] == 0
    assert len(faces(spark, copied)) == len(faces(spark, table))


def test_known_images_are_found_alike_by_spark_and_when_deletion_vectors_hide_rows(
    spark, tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large table (or chunk) is searched (hashed) by Spark instead of the driver, with the same answer;
    a table delta-rs cannot read right (deletion vectors) is searched by Spark, and a deleted image is
    embedded again."""
    import jobs.faces.known as known

    folder = tmp_path / "known"
    folder.mkdir()
    images = sorted((shared_data / "lfw" / "images" / "Zico").glob("*.jpg"))[:3]
    for path in images:
        shutil.copy(path, folder / path.name)
    table = tmp_path / "faces"
    assert run_embed(make_config(folder, table), spark)["files_processed"] == 3
    rows_of = sorted(Path(r.source_path).name for r in faces(spark, table))  # an image's row per face
    with monkeypatch.context() as patched:
        patched.setattr(known, "DRIVER_SEARCH_MAX_ROWS", 0)
        in_spark = run_embed(make_config(folder, table, "embed.driver_hash_max_files=0"), spark)
    assert in_spark["known_searched_by"] == "spark" and in_spark["files_skipped_known"] == 3
    spark.sql(f"ALTER TABLE delta.`{table}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    spark.sql(f"DELETE FROM delta.`{table}` WHERE source_path LIKE '%{images[0].name}'")
    assert any(p.name.startswith("deletion_vector_") for p in table.iterdir())  # the rows hidden, not rewritten
    after_delete = run_embed(make_config(folder, table), spark)
    assert after_delete["known_searched_by"] == "spark"
    assert (after_delete["files_processed"], after_delete["files_skipped_known"]) == (1, 2)
    assert sorted(Path(r.source_path).name for r in faces(spark, table)) == rows_of


def test_a_table_that_needs_sparks_writer_is_merged_into(spark, tmp_path: Path, shared_data: Path) -> None:
    """A CHECK constraint is Spark's writer's to enforce: files written by the workers are not added to
    such a table as they are, but MERGEd (the constraint checked), with the same rows and counts."""
    folders = [tmp_path / "first", tmp_path / "second"]
    for folder, person in zip(folders, ["Zico", "Aaron_Peirsol"]):
        folder.mkdir()
        for path in sorted((shared_data / "lfw" / "images" / person).glob("*.jpg"))[:2]:
            shutil.copy(path, folder / path.name)
    table = tmp_path / "faces"
    first = run_embed(make_config(folders[0], table), spark)
    spark.sql(f"ALTER TABLE delta.`{table}` ADD CONSTRAINT known_status CHECK (status IS NOT NULL)")
    second = run_embed(make_config(folders[1], table), spark)
    assert "commit" in first["timings_s"] and "merge" in second["timings_s"]
    assert second["files_processed"] == 2 and second["rows_written"] >= 2
    rows = faces(spark, table)
    assert len(rows) == first["rows_written"] + second["rows_written"]
    paths = {r.source_path for r in rows}
    assert paths == {str(folder / p.name) for folder in folders for p in folder.glob("*.jpg")}
    assert table_files(spark, table) == parquet_files(table)  # the merged chunk's own files were deleted


def test_a_writer_committing_during_the_run_sends_later_chunks_to_merge(
    spark, tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run commits the same content between this run's embedding and its commit: the workers'
    files are not added as they are (they would duplicate that face), but MERGEd, and nothing is lost."""
    import jobs.faces.commit as faces_commit  # commits through the name it imported

    images = sorted((shared_data / "lfw" / "images" / "Aaron_Peirsol").glob("*.jpg"))[:3]
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for folder, chosen in ((ours, images), (theirs, images[:1])):
        folder.mkdir()
        for image in chosen:
            shutil.copy(image, folder / image.name)
    table = tmp_path / "faces"
    calls: list[dict] = []
    original = faces_commit.commit_files

    def other_run_commits_first(*args, **kwargs):
        if not calls:  # ours has embedded its chunk (its table is fresh): now the other run lands first
            calls.append({})
            calls[0] = run_embed(make_config(theirs, table), spark)
        return original(*args, **kwargs)

    monkeypatch.setattr(faces_commit, "commit_files", other_run_commits_first)
    ours_summary = run_embed(make_config(ours, table), spark)
    assert "merge" in ours_summary["timings_s"] and "commit" in ours_summary["timings_s"]
    rows = faces(spark, table)
    assert len({r.face_id for r in rows}) == len(rows), "a face_id landed twice"
    assert {r.source_path for r in rows} == {str(theirs / images[0].name)} | {str(ours / p.name) for p in images[1:]}
    assert ours_summary["rows_already_present"] == calls[0]["rows_written"] >= 1
    assert table_files(spark, table) == parquet_files(table)  # the MERGEd chunk's source files are gone


def test_task_frames_are_local_relations_one_task_per_partition(spark) -> None:
    """The tasks' input rows reach the JVM as a local relation (Arrow), not through a Python RDD (a stage
    of Python workers per chunk, and ~2 s more on a fresh JVM's first run), one task per partition."""
    import json

    from pyspark.sql import functions as F

    from jobs.faces.ingest import _task_frame
    from jobs.faces.refs import InputRef

    tasks = [[InputRef(f"/a/{n}-{i}.jpg") for i in range(n + 1)] for n in range(5)]
    frame = _task_frame(spark, tasks)
    plan = frame._jdf.queryExecution().executedPlan().toString()
    assert "LocalTableScan" in plan and "ExistingRDD" not in plan, plan
    rows = sorted(frame.withColumn("partition", F.spark_partition_id()).collect(), key=lambda r: r.partition)
    assert [r.partition for r in rows] == list(range(5))
    assert [r.first for r in rows] == [0, 1, 3, 6, 10]
    assert [[ref["path"] for ref in json.loads(r.refs)] for r in rows] == [[ref.path for ref in t] for t in tasks]
