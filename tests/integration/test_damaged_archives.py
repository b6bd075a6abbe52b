"""Archives damaged partway (a corrupted stretch, a copy cut short, a compressed stream that stops
decoding): every member that can be read whole is embedded, and the damage is one row naming the archive
and where reading was lost."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from jobs.common.config import load_config
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from jobs.faces.tars import list_tar_members

pytestmark = pytest.mark.data

DAMAGE = "damaged archive"


def archive_of(images: list[Path]) -> tuple[bytes, list[tarfile.TarInfo]]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for image in images:
            tar.add(image, arcname=image.name)
    data = buffer.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return data, tar.getmembers()


def noise(length: int) -> bytes:
    return np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def images(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "lfw" / "images").rglob("*.jpg"))[:40]


def damaged(images: list[Path], folder: Path) -> dict[str, tuple[Path, set[str]]]:
    """name -> (archive, the members whose bytes are intact): five archives of 8 different photographs
    each (no content shared, so every member is a row of its own), each damaged in its own way."""
    folder.mkdir()
    out: dict[str, tuple[Path, set[str]]] = {}
    batches = iter([images[start : start + 8] for start in range(0, 40, 8)])

    def write(name: str, content: bytes, intact: set[str]) -> None:
        (folder / name).write_bytes(content)
        out[name] = (folder / name, intact)

    for at in (1, 5):  # a stretch of noise over a member's header and the start of its data
        data, members = archive_of(next(batches))
        corrupt = bytearray(data)
        start, end = members[at].offset, members[at].offset_data + 1024
        corrupt[start:end] = noise(end - start)
        write(f"noise-at-{at}.tar", bytes(corrupt), {m.name for m in members} - {members[at].name})
    for at in (3, 6):  # an interrupted copy: cut inside a member's data
        data, members = archive_of(next(batches))
        write(f"cut-at-{at}.tar", data[: members[at].offset_data + 100], {m.name for m in members[:at]})
    data, members = archive_of(next(batches))
    packed = gzip.compress(data, mtime=0)
    write("cut.tar.gz", packed[: len(packed) * 3 // 4], set())  # the members before the cut: checked below
    return out


def test_a_damaged_tar_lists_every_intact_member_and_says_where(images: list[Path], tmp_path: Path) -> None:
    for name, (path, intact) in damaged(images, tmp_path / "tars").items():
        refs = list_tar_members(path, "*", 2**30)
        [damage] = [r for r in refs if r.member is None]
        assert damage.status == "read_error" and DAMAGE in (damage.error or "") and "byte" in (damage.error or "")
        listed = {r.member for r in refs if r.member is not None}
        assert intact <= listed, (name, sorted(intact - listed))
        plain = tarfile.open(path, ignore_zeros=False)  # what tarfile alone lists: it stops at the damage
        try:
            alone = len(plain.getmembers())
        except (tarfile.ReadError, EOFError, OSError):
            alone = 0
        finally:
            plain.close()
        assert len(listed) >= alone


def test_damaged_archives_embed_what_was_intact(spark, images: list[Path], tmp_path: Path) -> None:
    archives = damaged(images, tmp_path / "tars")
    config = load_config(
        EmbedConfig,
        None,
        [f"embed.input.path={tmp_path / 'tars'}", "embed.input.kind=tar", f"embed.table_path={tmp_path / 'faces'}"],
    )
    summary = run_embed(config, spark)
    rows = spark.read.format("delta").load(str(tmp_path / "faces")).collect()
    listed = sum(len(list_tar_members(path, "*", 2**30)) for path, _ in archives.values())
    assert summary["files_seen"] == len({r.source_path for r in rows}) == listed  # every entry is a row
    for name, (path, intact) in archives.items():
        own = [r for r in rows if r.source_path.startswith(str(path.resolve()))]
        damage = [r for r in own if r.source_path == str(path.resolve())]
        assert len(damage) == 1 and damage[0].status == "read_error" and DAMAGE in damage[0].error, name
        embedded = {r.source_path.split("!", 1)[1] for r in own if "!" in r.source_path and r.status == "ok"}
        assert intact <= embedded, (name, sorted(intact - embedded))
    cut = [r for r in rows if r.source_path.startswith(str(archives["cut.tar.gz"][0].resolve()) + "!")]
    assert sum(r.status == "ok" for r in cut) >= 4  # the members before the cut of a compressed stream
