"""The face -> subject lookup an index generation keeps: against a dict, through its file, and less the
faces of an erasure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from jobs.shards.face_subjects import (
    FaceSubjects,
    load_face_subjects,
    read_face_subjects_bytes,
    sorted_face_subjects,
    subject_count,
    without_faces,
    write_face_subjects,
)
from jobs.shards.manifest import IndexFileError, Manifest


def random_faces(seed: int, faces: int = 5_000) -> tuple[np.ndarray, list[str | None]]:
    rng = np.random.default_rng(seed)
    ids = rng.choice(10**12, size=faces, replace=False).astype(np.int64)
    subjects = [None if x < 30 else f"person-{x}" for x in rng.integers(0, 900, size=faces)]
    return ids, subjects


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lookup_equals_a_dict(seed: int) -> None:
    ids, subjects = random_faces(seed)
    truth = dict(zip(ids.tolist(), subjects))
    lookup = FaceSubjects.of(sorted_face_subjects(pa.array(ids), pa.array(subjects)))
    rng = np.random.default_rng(seed + 10)
    asked = np.concatenate([rng.choice(ids, 2_000), rng.integers(0, 10**12, 200), [-1, 0, 10**13]])
    assert lookup.lookup(asked).to_pylist() == [truth.get(i) for i in asked.tolist()]
    assert subject_count(sorted_face_subjects(pa.array(ids), pa.array(subjects))) == len(
        {s for s in subjects if s is not None}
    )


def test_an_empty_generation_names_no_subject() -> None:
    empty = FaceSubjects.of(sorted_face_subjects(pa.array([], pa.int64()), pa.array([], pa.string())))
    assert empty.lookup(np.array([1, 2])).to_pylist() == [None, None]


def test_without_faces_drops_the_rows_and_a_subject_left_with_none() -> None:
    table = sorted_face_subjects(pa.array([1, 2, 3, 4]), pa.array(["a", "b", "b", "c"]))
    kept = without_faces(table, np.array([1, 3]))
    assert kept.column("face_id").to_pylist() == [2, 4]
    assert kept.column("subject_id").to_pylist() == ["b", "c"]
    # the erased subject's name is not in the dictionary either (it would be in the file's bytes)
    assert "a" not in kept.column("subject_id").combine_chunks().dictionary.to_pylist()
    assert subject_count(kept) == 2


def manifest_with(fields: dict) -> Manifest:
    return Manifest.model_validate(
        {"index_id": "i", "model_id": "m", "dim": 4, "metric": "inner_product", "faces_table": "t",
         "faces_version": 0, "vectors": 3, "exact": True, "search_param": None, "shards": [], **fields}
    )  # fmt: skip


def test_the_file_round_trips_and_a_changed_one_is_refused(tmp_path: Path) -> None:
    table = sorted_face_subjects(pa.array([9, 4, 7]), pa.array(["x", "y", None]))
    fields = write_face_subjects(tmp_path, 123, table)
    assert fields["face_subjects_file"] == "face_subjects.g123.arrow" and fields["gallery_subjects"] == 2
    manifest = manifest_with(fields)
    assert fields["face_subjects_file"] in manifest.named_files()
    data = (tmp_path / fields["face_subjects_file"]).read_bytes()
    assert read_face_subjects_bytes(data).column("face_id").to_pylist() == [4, 7, 9]
    assert load_face_subjects(tmp_path, manifest).lookup(np.array([7, 9])).to_pylist() == [None, "x"]
    other = tmp_path / "other"
    other.mkdir()
    (other / fields["face_subjects_file"]).write_bytes(data.replace(b"x", b"z"))
    with pytest.raises(IndexFileError, match="sha256"):
        load_face_subjects(other, manifest)
