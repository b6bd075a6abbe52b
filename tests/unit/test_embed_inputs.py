"""Planning and reading hostile inputs, without Spark: every entry becomes exactly one ref and one loaded
item, reads are bounded and never block, names that are not UTF-8 survive byte for byte."""

from __future__ import annotations

import json
import os
import tarfile
import threading
from dataclasses import asdict
from pathlib import Path

import pytest

from jobs.common.errors import UserError
from jobs.faces.config import InputSettings
from jobs.faces.plan import cut_tasks, list_inputs
from jobs.faces.read import read_refs
from jobs.faces.refs import InputRef
from jobs.faces.tars import TAR_SUFFIXES
from tests.fixtures.hostile import LATIN1_NAME, add_huge_member, add_member, fs_name, hostile_tar

IMAGE_A, IMAGE_B = b"\xff\xd8 first image bytes", b"\xff\xd8 second image, other bytes"
LIMIT = 1024


def settings(path: Path, kind: str = "tar", **extra) -> InputSettings:
    return InputSettings(kind=kind, path=str(path), glob="*.jpg", max_file_bytes=LIMIT, **extra)


def read_all(refs: list[InputRef]) -> dict[str, object]:
    # through JSON, as tasks travel to executors
    travelled = [InputRef(**ref) for ref in json.loads(json.dumps([asdict(r) for r in refs]))]
    return {item.ref_name: item for item in read_refs(travelled, LIMIT)}


def test_hostile_tar_every_member_is_one_row_with_its_own_bytes(tmp_path: Path) -> None:
    tar_path = tmp_path / "hostile.tar"
    hostile_tar(tar_path, IMAGE_A, IMAGE_B)
    refs = list_inputs(settings(tar_path))
    items = read_all(refs)
    assert len(items) == len(refs) == 8  # the folder member is not an entry
    by_member = {name.split("!", 1)[1]: item for name, item in items.items()}
    duplicates = sorted(k for k in by_member if k.startswith("dup/same.jpg#offset="))
    assert len(duplicates) == 2  # both members of one name, told apart by their offsets
    assert [by_member[k].data for k in duplicates] == [IMAGE_A, IMAGE_B]
    latin = by_member["latin/caf\\xe9.jpg"]
    assert latin.data == IMAGE_A and latin.raw_path.endswith(b"!latin/" + LATIN1_NAME)
    latin.ref_name.encode("utf-8")  # storable as a Delta string
    assert by_member["links/hard.jpg"].data == IMAGE_B  # a hard link reads its target inside the archive
    for name in ["links/hard_to_nothing.jpg", "links/soft.jpg", "devices/fifo.jpg", "devices/zero.jpg"]:
        assert by_member[name].status == "not_a_file" and by_member[name].data is None, name


def test_a_member_declaring_2_gib_is_too_large_without_being_read(tmp_path: Path) -> None:
    tar_path = tmp_path / "huge.tar"
    with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as archive:
        add_huge_member(archive, "huge.jpg", 2 * 1024**3)
        add_member(archive, "after.jpg", IMAGE_A)
    items = read_all(list_inputs(settings(tar_path)))
    huge = items[f"{tar_path}!huge.jpg"]
    assert huge.status == "too_large" and "embed.input.max_file_bytes" in huge.error
    assert items[f"{tar_path}!after.jpg"].data == IMAGE_A


@pytest.mark.parametrize("suffix", TAR_SUFFIXES)
def test_every_tar_suffix_in_a_folder_is_read(tmp_path: Path, suffix: str) -> None:
    mode = {".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.bz2": "w:bz2", ".tbz2": "w:bz2", ".tbz": "w:bz2"}
    mode |= {".tar.xz": "w:xz", ".txz": "w:xz"}
    folder = tmp_path / "tars"
    folder.mkdir()
    hostile_tar(folder / f"a{suffix}", IMAGE_A, IMAGE_B, mode.get(suffix, "w"))
    refs = list_inputs(settings(folder))
    tasks = cut_tasks(refs, files_per_task=2)
    if suffix != ".tar":
        assert len(tasks) == 1  # a compressed stream is read by one task, once
    items = read_all(refs)
    assert len(items) == 8
    assert sorted(i.data for i in items.values() if i.data is not None) == sorted([IMAGE_A, IMAGE_B, IMAGE_A, IMAGE_B])


def test_a_broken_tar_in_a_folder_is_a_row_not_a_failed_run(tmp_path: Path) -> None:
    folder = tmp_path / "tars"
    folder.mkdir()
    (folder / "broken.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    hostile_tar(folder / "good.tar", IMAGE_A, IMAGE_B)
    items = read_all(list_inputs(settings(folder)))
    assert items[str(folder / "broken.tar.gz")].status == "read_error"
    assert len(items) == 9
    with pytest.raises(UserError, match="embed.input.path .* is not a readable tar"):
        list_inputs(settings(folder / "broken.tar.gz"))


def test_folder_with_fifo_device_links_and_latin1_name(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "ok.jpg").write_bytes(IMAGE_A)
    os.mkfifo(root / "fifo.jpg")
    (root / "zero.jpg").symlink_to("/dev/zero")
    (root / "inside.jpg").symlink_to(root / "ok.jpg")
    (tmp_path / "outside.jpg").write_bytes(IMAGE_B)
    (root / "outside.jpg").symlink_to(tmp_path / "outside.jpg")
    (root / "big.jpg").write_bytes(b"x" * (LIMIT + 1))
    os.close(os.open(os.path.join(os.fsencode(root), LATIN1_NAME), os.O_CREAT | os.O_WRONLY))
    Path(os.path.join(str(root), fs_name(LATIN1_NAME))).write_bytes(IMAGE_B)

    done: dict[str, object] = {}
    reader = threading.Thread(target=lambda: done.update(read_all(list_inputs(settings(root, "dir")))), daemon=True)
    reader.start()
    reader.join(timeout=120)  # generous: only a hang (the FIFO) can make this fail
    assert not reader.is_alive(), "reading the folder blocked"
    by_name = {Path(name).name: item for name, item in done.items()}
    assert len(by_name) == 7
    assert by_name["ok.jpg"].data == IMAGE_A and by_name["inside.jpg"].data == IMAGE_A
    assert by_name["fifo.jpg"].status == "not_a_file" and "FIFO" in by_name["fifo.jpg"].error
    assert by_name["zero.jpg"].status == "not_a_file"  # outside the root: not followed
    assert by_name["outside.jpg"].status == "not_a_file" and "follow_symlinks" in by_name["outside.jpg"].error
    assert by_name["big.jpg"].status == "too_large"
    latin = by_name["caf\\xe9.jpg"]
    assert latin.data == IMAGE_B and latin.raw_path == os.fsencode(root) + b"/" + LATIN1_NAME

    followed = {Path(n).name: i for n, i in read_all(list_inputs(settings(root, "dir", follow_symlinks=True))).items()}
    assert followed["outside.jpg"].data == IMAGE_B
    assert followed["zero.jpg"].status == "not_a_file" and "character device" in followed["zero.jpg"].error
