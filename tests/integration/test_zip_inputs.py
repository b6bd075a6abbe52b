"""Zip archives as photo exports arrive: made by Python's zipfile and by the system `zip` tool, ZIP64,
streamed (sizes after the data), encrypted members, zip bombs, names in either encoding, and a copy whose
central directory was lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from jobs.faces.tars import list_archive_members
from jobs.faces.zips import MAX_RATIO

pytestmark = pytest.mark.data

ZIP = shutil.which("zip")


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "lfw" / "images").rglob("*.jpg"))[100:112]


def python_zip(path: Path, photos: list[Path], **options: object) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, **options) as archive:  # type: ignore[arg-type]
        for photo in photos:
            archive.write(photo, f"{photo.parent.name}/{photo.name}")
    return path


def read_all(path: Path, limit: int = 2**30) -> dict[str, bytes | str]:
    """member -> its bytes as the executors read them (or the row's status)."""
    from jobs.faces.read import read_refs

    out: dict[str, bytes | str] = {}
    for item in read_refs(list_archive_members(path, "*", limit), limit):
        member = item.ref_name.split("!", 1)[1] if "!" in item.ref_name else "(archive)"
        out[member] = item.data if item.data is not None else f"{item.status}: {item.error}"
    return out


def test_a_python_zip_and_a_zip64_one_read_member_for_member(photos: list[Path], tmp_path: Path) -> None:
    for name, options in (("plain.zip", {}), ("zip64.zip", {"allowZip64": True})):
        path = python_zip(tmp_path / name, photos, **options)
        if name == "zip64.zip":  # force ZIP64 records for every member, as archives over 4 GiB have
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                for photo in photos:
                    with archive.open(f"{photo.parent.name}/{photo.name}", "w", force_zip64=True) as member:
                        member.write(photo.read_bytes())
        read = read_all(path)
        assert read == {f"{p.parent.name}/{p.name}": p.read_bytes() for p in photos}, name


@pytest.mark.skipif(ZIP is None, reason="the system zip tool is not installed (apt-get install zip)")
def test_zips_of_the_system_tool_streamed_and_encrypted(photos: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    for photo in photos[:6]:
        shutil.copy(photo, folder / photo.name)
    latin1 = os.fsencode(folder) + b"/caf\xe9.jpg"  # a legacy Latin-1 name, not UTF-8
    shutil.copy(photos[6], latin1)
    subprocess.run([ZIP, "-q", "-r", str(tmp_path / "tool.zip"), "export"], cwd=tmp_path, check=True)
    with open(tmp_path / "streamed.zip", "wb") as out:  # to a pipe: sizes follow each member's data
        subprocess.run([ZIP, "-q", "-r", "-", "export"], cwd=tmp_path, check=True, stdout=out)
    subprocess.run([ZIP, "-q", "-P", "secret", str(tmp_path / "locked.zip"), "export/" + photos[0].name],
                   cwd=tmp_path, check=True)  # fmt: skip
    for name in ("tool.zip", "streamed.zip"):
        read = read_all(tmp_path / name)
        for photo in photos[:6]:
            assert read[f"export/{photo.name}"] == photo.read_bytes(), name
        assert read["export/caf\\xe9.jpg"] == photos[6].read_bytes()  # shown escaped, as for tars
        [legacy] = [r for r in list_archive_members(tmp_path / name, "*", 2**30) if "caf" in (r.member or "")]
        assert os.fsencode(legacy.member) == b"export/caf\xe9.jpg" and legacy.source_path_raw is not None
    [locked] = list_archive_members(tmp_path / "locked.zip", "*", 2**30)
    assert locked.status == "read_error" and "encrypted" in (locked.error or "")


def test_zip_bombs_and_oversized_members_are_refused_before_reading(photos: list[Path], tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.jpg", b"\0" * (MAX_RATIO * 50_000))  # inflates ~1000x
        small, big = sorted(photos[:2], key=lambda photo: photo.stat().st_size)
        archive.write(big, "big.jpg")
        archive.write(small, "fine.jpg")
    refs = {r.member: r for r in list_archive_members(path, "*", small.stat().st_size)}
    assert refs["zeros.jpg"].status == "too_large" and "ratio" in (refs["zeros.jpg"].error or "")
    assert refs["big.jpg"].status == "too_large" and "max_file_bytes" in (refs["big.jpg"].error or "")
    assert refs["fine.jpg"].status is None


def test_a_zip_without_its_central_directory_is_salvaged(photos: list[Path], tmp_path: Path) -> None:
    whole = python_zip(tmp_path / "whole.zip", photos).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole[: whole.find(b"PK\x01\x02")])  # the copy stopped before the central directory
    read = read_all(cut)
    assert {m: d for m, d in read.items() if m != "(archive)"} == {
        f"{p.parent.name}/{p.name}": p.read_bytes() for p in photos
    }
    assert "damaged archive" in str(read["(archive)"])
    half = tmp_path / "half.zip"
    half.write_bytes(whole[: len(whole) // 2])  # cut inside a member: the members before it are kept
    refs = list_archive_members(half, "*", 2**30)
    assert 2 <= sum(r.status is None for r in refs) < len(photos) and refs[-1].member is None


def test_an_export_folder_of_zips_and_tars_embeds_every_photo(spark, photos: list[Path], tmp_path: Path) -> None:
    import tarfile

    from jobs.common.config import load_config
    from jobs.embed.config import EmbedConfig
    from jobs.embed.job import run_embed

    exports = tmp_path / "exports"
    exports.mkdir()
    python_zip(exports / "phone.zip", photos[:6])
    with tarfile.open(exports / "camera.tar", "w") as tar:
        for photo in photos[6:]:
            tar.add(photo, f"{photo.parent.name}/{photo.name}")
    config = load_config(
        EmbedConfig,
        None,
        [f"embed.input.path={exports}", "embed.input.kind=tar", f"embed.table_path={tmp_path / 'faces'}"],
    )
    summary = run_embed(config, spark)
    rows = spark.read.format("delta").load(str(tmp_path / "faces")).where("face_index <= 0").collect()
    members = {r.source_path.rsplit("!", 1)[-1] for r in rows}
    assert members == {f"{p.parent.name}/{p.name}" for p in photos} and summary["files_seen"] == len(photos)
    assert any(r.source_path.endswith(".zip!" + f"{photos[0].parent.name}/{photos[0].name}") for r in rows)
