"""The driver's own read of a small Delta table (delta-rs, no JVM): what an all-known embed run asks."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from jobs.common.delta import driver_snapshot
from jobs.faces.known import DRIVER_SEARCH_MAX_FILES, DRIVER_SEARCH_MAX_ROWS, HeldOnDriver, held_images

MODEL = "model-a"


def faces_rows(image_ids: list[str], model_id: str = MODEL, first_face_id: int = 1) -> pa.Table:
    return pa.table(
        {
            "face_id": pa.array(range(first_face_id, first_face_id + len(image_ids)), pa.int64()),
            "image_id": pa.array(image_ids, pa.string()),
            "model_id": pa.array([model_id] * len(image_ids), pa.string()),
        }
    )


def test_a_column_without_file_statistics_is_still_searched(tmp_path: Path) -> None:
    """Lineup's workers record statistics for face_id only; delta-rs's own dataset reads a column without
    them as `>= null` and a filter on it then matches nothing (deltalake 1.6.6)."""
    from jobs.common.delta_files import write_data_file

    table = str(tmp_path / "faces")
    write_deltalake(table, faces_rows(["a", "b"]))
    # a file the way the embed workers add one: statistics for face_id alone, committed as version 1
    add = write_data_file(table, faces_rows(["c", "d"], first_face_id=3).to_batches()[0], ("face_id",))
    (tmp_path / "faces" / "_delta_log" / f"{1:020d}.json").write_text(add + "\n")
    snapshot = driver_snapshot(table)
    assert snapshot is not None and (snapshot.version, snapshot.files, snapshot.rows) == (1, 2, 4)
    held = HeldOnDriver(snapshot, MODEL)
    assert held.known_among({"a", "c", "z"}) == {"a", "c"}
    assert HeldOnDriver(snapshot, "model-b").known_among({"a", "c"}) == set()  # another model's images
    assert held.face_ids_among([2, 3, 99]) == {2, 3}
    assert held.known_among(set()) == set() and held.face_ids_among([]) == set()


def test_a_pinned_version_is_read_as_it_was(tmp_path: Path) -> None:
    table = str(tmp_path / "faces")
    write_deltalake(table, faces_rows(["a"]))
    write_deltalake(table, faces_rows(["b"], first_face_id=2), mode="append")
    at_start = driver_snapshot(table, version=0)
    assert at_start is not None and at_start.version == 0
    assert HeldOnDriver(at_start, MODEL).known_among({"a", "b"}) == {"a"}


def test_no_table_and_a_partitioned_table_are_left_to_spark(tmp_path: Path) -> None:
    assert driver_snapshot(str(tmp_path / "nothing-here")) is None
    (tmp_path / "not-delta").mkdir()
    (tmp_path / "not-delta" / "photo.jpg").write_bytes(b"x")
    assert driver_snapshot(str(tmp_path / "not-delta")) is None
    partitioned = str(tmp_path / "partitioned")
    write_deltalake(partitioned, faces_rows(["a"]), partition_by=["model_id"])
    assert driver_snapshot(partitioned) is None  # the partition column is not in the files


def test_a_large_table_or_another_version_is_searched_by_spark(tmp_path: Path) -> None:
    table = str(tmp_path / "faces")
    write_deltalake(table, faces_rows(["a"]))
    snapshot = driver_snapshot(table)
    assert isinstance(held_images(None, table, 0, MODEL, snapshot), HeldOnDriver)
    large = type(snapshot)(snapshot.version, snapshot.columns, 1, DRIVER_SEARCH_MAX_ROWS + 1, snapshot.dataset)
    assert not isinstance(held_images(None, table, 0, MODEL, large), HeldOnDriver)
    many = type(snapshot)(snapshot.version, snapshot.columns, DRIVER_SEARCH_MAX_FILES + 1, 1, snapshot.dataset)
    assert not isinstance(held_images(None, table, 0, MODEL, many), HeldOnDriver)
    assert not isinstance(held_images(None, table, 1, MODEL, snapshot), HeldOnDriver)
    assert not isinstance(held_images(None, table, 0, MODEL, None), HeldOnDriver)
