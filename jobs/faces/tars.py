"""Tar archives as inputs: their members listed (on the driver for local tars, on the executors for remote
ones), never extracted; each member addressed by its header offset, refused with a status when it is
unsafe, not a regular file or over the size limit."""

from __future__ import annotations

import fnmatch
import json
import lzma
import os
import tarfile
import zlib
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, ClassVar, Self

from jobs.common import storage
from jobs.common.errors import UserError
from jobs.faces.refs import NOT_A_FILE, READ_ERROR, TOO_LARGE, UNSAFE_MEMBER, InputRef, display_name
from jobs.faces.zips import ZIP_SUFFIXES, is_zip, list_zip_members

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

if TYPE_CHECKING:  # executors import this module: pydantic's import is 0.1 s of a worker's start
    from jobs.faces.config import InputSettings

# Every suffix tarfile opens ("r:*" detects the compression from the bytes, not the name).
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = TAR_SUFFIXES + ZIP_SUFFIXES  # what a folder of archives is read for


# How a compressed tar starts, and the compression's name (what `read.py` opens it with).
COMPRESSION_BY_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}


def list_tars_on_executors(
    spark: SparkSession, tars: list[str], settings: InputSettings, single: bool
) -> list[InputRef]:
    """Each tar's members, listed by one task per tar (the archive streams through the executor once)."""

    if spark is None:
        raise ValueError("listing tars on the executors needs the SparkSession")
    pattern, limit = settings.glob, settings.max_file_bytes

    def members(tar: str) -> list[str]:
        return [json.dumps(ref.__dict__) for ref in list_archive_members(tar, pattern, limit, in_folder=True)]

    listed = spark.sparkContext.parallelize(tars, max(1, len(tars))).flatMap(members).collect()
    refs = [InputRef(**json.loads(item)) for item in listed]
    if single and refs and refs[0].status == READ_ERROR and refs[0].member is None:
        reason = (refs[0].error or "").removeprefix("not a readable tar: ")
        raise UserError(f"embed.input.path {tars[0]} is not a readable tar archive: {reason}")
    return refs


def unsafe_member_reason(name: str) -> str | None:
    """Why a tar member name must not be trusted, or None. We never extract, but names become ids and
    paths in the table, and a name with `..` or an absolute path is how archives attack extractors."""
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")):
        return "absolute member name"
    if ".." in path.parts:
        return "member name climbs out of the archive (..)"
    return None


def compression_of(tar_path: Path | str) -> str | None:
    """The compression a tar file's first bytes announce, or None for a plain tar."""
    with storage.upath(tar_path).open("rb") as handle:
        head = handle.read(6)
    return next((name for magic, name in COMPRESSION_BY_MAGIC.items() if head.startswith(magic)), None)


def is_compressed(tar_path: Path | str) -> bool:
    return compression_of(tar_path) is not None


def list_archive_members(path: Path | str, pattern: str, max_file_bytes: int, in_folder: bool = True) -> list[InputRef]:
    """A tar's or a zip's members (a zip by its first bytes, whatever its name)."""
    if is_zip(path):
        return list_zip_members(path, pattern, max_file_bytes, in_folder)
    return list_tar_members(path, pattern, max_file_bytes, in_folder)


def list_tar_members(tar_path: Path | str, pattern: str, max_file_bytes: int, in_folder: bool = True) -> list[InputRef]:
    """One ref per member matching `pattern` (folders aside), in archive order, each located by offset.

    A tar given directly that cannot be read is a `UserError`; one inside a folder of tars becomes one
    `read_error` ref, so one bad archive does not stop the others.
    """
    # A local tar by its real path, as recorded before: reruns keep the same source_path.
    path = str(tar_path) if storage.is_remote(tar_path) else os.path.realpath(tar_path)
    try:
        compressed = is_compressed(path)
        refs = _member_refs(path, pattern, max_file_bytes, compressed)
    except (tarfile.TarError, OSError, EOFError) as error:
        if not in_folder:
            raise UserError(f"embed.input.path {tar_path} is not a readable tar archive: {error}") from None
        return [InputRef(path, None, os.path.basename(path), status=READ_ERROR, error=f"not a readable tar: {error}")]
    return _tag_duplicates(refs)


class _DamageLog(tarfile.TarInfo):
    """Header blocks that fail their checksum, by offset: tarfile (with `ignore_zeros`) steps over them
    to the next valid header, and the plan reports where the archive was damaged. One subclass per
    archive (`_damage_log`), so each listing keeps its own offsets."""

    damaged: ClassVar[list[int]] = []

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(archive)
        except tarfile.HeaderError as error:
            # tarfile's InvalidHeaderError (bad checksum, bad number): not its empty or end-of-file blocks
            if type(error).__name__ == "InvalidHeaderError":
                cls.damaged.append(archive.offset)
            raise


def _damage_log() -> type[_DamageLog]:
    class Log(_DamageLog):
        damaged: ClassVar[list[int]] = []

    return Log


def _member_refs(path: str, pattern: str, max_file_bytes: int, compressed: bool) -> list[tuple[int, InputRef]]:
    """(header offset, ref) of every member the plan keeps, salvaged from a damaged archive: a stretch
    whose headers fail their checksum is stepped over to the next valid header, a stream that ends early
    (cut short, or a compressed stretch that no longer decodes) keeps what came before it, and the damage
    is one more `read_error` ref naming the archive and the offsets where reading was lost."""
    refs: list[tuple[int, InputRef]] = []
    regular: dict[str, tarfile.TarInfo] = {}  # the latest regular member of each name: hard links point there
    damage = _damage_log()
    stopped: str | None = None
    with (
        storage.upath(path).open("rb") as raw,
        tarfile.open(fileobj=raw, mode="r:*", ignore_zeros=True, tarinfo=damage) as archive,
    ):
        try:
            while (member := archive.next()) is not None:
                archive.members.clear()  # type: ignore[attr-defined]  # TarFile keeps each header; the plan keeps refs
                if member.isreg():
                    regular[member.name] = member
                if member.isdir() or not fnmatch.fnmatch(PurePosixPath(member.name).name, pattern):
                    continue
                refs.append((member.offset, _member_ref(path, member, regular, max_file_bytes, compressed)))
        except (tarfile.ReadError, EOFError, OSError, zlib.error, lzma.LZMAError) as error:
            if not refs and not damage.damaged:
                raise
            stopped = f"reading stopped at byte {archive.offset}{' of the decompressed stream' if compressed else ''}"
            stopped += f" ({type(error).__name__}: {error})"
        if stopped is None and not compressed:
            size = storage.upath(path).stat().st_size
            ends = [ref.offset + ref.size for _, ref in refs if ref.offset is not None and ref.size is not None]
            if ends and max(ends) > size:
                stopped = f"the archive ends at byte {size}, inside a member: it was cut short"
    if damage.damaged or stopped:
        refs.append((len(refs), _damage_ref(path, damage.damaged, stopped, len(refs), compressed)))
    return refs


def _damage_ref(path: str, damaged: list[int], stopped: str | None, kept: int, compressed: bool) -> InputRef:
    stretches, start = [], None
    for block, offset in enumerate(damaged):
        if start is None:
            start = offset
        if block + 1 == len(damaged) or damaged[block + 1] != offset + tarfile.BLOCKSIZE:
            stretches.append(f"{start}-{offset + tarfile.BLOCKSIZE}")
            start = None
    parts = [f"unreadable headers at bytes {', '.join(stretches)} were stepped over"] if stretches else []
    parts += [stopped] if stopped else []
    error = f"damaged archive: {'; '.join(parts)}; {kept} member(s) were listed"
    return InputRef(
        path, None, display_name(os.path.basename(path)), compressed=compressed, status=READ_ERROR, error=error
    )


def _member_ref(
    path: str, member: tarfile.TarInfo, regular: dict[str, tarfile.TarInfo], max_file_bytes: int, compressed: bool
) -> InputRef:
    def refused(status: str, error: str) -> InputRef:
        return InputRef(path, member.name, member.name, member.offset_data, None, compressed, status, error)

    reason = unsafe_member_reason(member.name)
    if reason:
        return refused(UNSAFE_MEMBER, f"refused: {reason}")
    data_member = member
    if member.islnk():
        target = regular.get(member.linkname)
        if target is None:
            target_name = display_name(member.linkname)
            return refused(NOT_A_FILE, f"hard link to {target_name!r}, not a regular member before it")
        data_member = target
    elif member.issym():
        return refused(NOT_A_FILE, f"symbolic link to {display_name(member.linkname)!r}: links are not followed")
    elif not member.isreg():
        return refused(NOT_A_FILE, f"a {_member_kind(member)} member, not a regular file")
    if data_member.issparse():
        return refused(NOT_A_FILE, "a sparse member: not supported, store it as a regular file")
    if data_member.size > max_file_bytes:
        return refused(
            TOO_LARGE,
            f"member is {data_member.size} bytes, over embed.input.max_file_bytes={max_file_bytes}; "
            "raise it to read it",
        )
    return InputRef(path, member.name, member.name, data_member.offset_data, data_member.size, compressed)


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "FIFO"
    return f"type {member.type!r}"


def _tag_duplicates(refs: list[tuple[int, InputRef]]) -> list[InputRef]:
    """Members that share a name are told apart by their header offset (stable for the same archive)."""
    seen: dict[str | None, int] = {}
    for _, ref in refs:
        seen[ref.member] = seen.get(ref.member, 0) + 1
    return [ref if seen[ref.member] == 1 else replace(ref, tag=f"#offset={offset}") for offset, ref in refs]
