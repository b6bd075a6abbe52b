"""Zip archives as inputs (phone backups, cloud takeouts, evidence bundles), read like tars: members listed
from the central directory (ZIP64 included) and read on the executors by their local header's offset,
never extracted.

Every member is bounded before a byte of it is read: its declared size against `max_file_bytes`, and its
declared compression ratio (a zip bomb declares a small compressed size for a huge member) are checked
from the central directory; an encrypted member is a status row. A zip whose central directory is
damaged or missing (a copy cut short) is salvaged from its local headers: each member found in order,
until the data stops making sense, and the damage is one more row naming the offset.

Names are recorded losslessly, as for tars: a name flagged UTF-8 is kept as such; any other name's bytes
are read as UTF-8 where they are (most zip tools write UTF-8 without the flag), with undecodable bytes
kept as surrogate escapes (`source_path_raw` then holds the exact bytes).
"""

from __future__ import annotations

import fnmatch
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from jobs.common import storage
from jobs.common.errors import UserError
from jobs.faces.refs import NOT_A_FILE, READ_ERROR, TOO_LARGE, UNSAFE_MEMBER, InputRef, display_name

ZIP_SUFFIXES = (".zip",)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local header, or the end record of an empty zip
# A member that inflates more than this many times over is refused before it is read: photographs
# compress a few percent (JPEG, HEIC) to a few times (PNG, BMP); a zip bomb declares thousands.
MAX_RATIO = 200
LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # signature ... name length, extra length
ENCRYPTED, UTF8_NAME, DATA_DESCRIPTOR = 0x1, 0x800, 0x8
STORED, DEFLATED = 0, 8


def is_zip(path: Path | str) -> bool:
    with storage.upath(path).open("rb") as handle:
        return handle.read(4) in ZIP_MAGIC


@dataclass(frozen=True)
class _Entry:
    name: str  # as the plan records it (surrogate escapes for undecodable bytes)
    offset: int  # the local header's offset in the archive
    size: int  # uncompressed, as declared
    compressed: int  # compressed, as declared (-1: unknown, salvaged from a streamed member)
    flags: int
    method: int
    mode: int  # Unix mode bits where the archive kept them, else 0


def list_zip_members(path: Path | str, pattern: str, max_file_bytes: int, in_folder: bool = True) -> list[InputRef]:
    """One ref per member matching `pattern` (folders aside), in archive order, each located by offset."""
    location = str(path) if storage.is_remote(path) else os.path.realpath(path)
    damage: InputRef | None = None
    try:
        entries = _central_directory(location)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        entries, stopped = _salvaged(location)
        if not entries:
            if not in_folder:
                raise UserError(f"embed.input.path {path} is not a readable zip archive: {error}") from None
            return [
                InputRef(
                    location, None, os.path.basename(location), status=READ_ERROR, error=f"not a readable zip: {error}"
                )
            ]
        damage = InputRef(
            location,
            None,
            display_name(os.path.basename(location)),
            status=READ_ERROR,
            error=f"damaged archive: the central directory is unreadable ({error}); {len(entries)} member(s) "
            f"were found from their local headers; reading stopped at byte {stopped}",
        )
    refs = [_ref(location, entry, max_file_bytes) for entry in entries if _wanted(entry, pattern)]
    seen: dict[str, int] = {}
    for ref in refs:
        seen[ref.member or ""] = seen.get(ref.member or "", 0) + 1
    refs = [ref if seen[ref.member or ""] == 1 else replace(ref, tag=f"#offset={ref.offset}") for ref in refs]
    return refs + ([damage] if damage else [])


def _wanted(entry: _Entry, pattern: str) -> bool:
    return not entry.name.endswith("/") and fnmatch.fnmatch(PurePosixPath(entry.name).name, pattern)


def _name(raw: bytes, flags: int) -> str:
    return raw.decode("utf-8", "surrogateescape") if not flags & UTF8_NAME else raw.decode("utf-8", "replace")


def _central_directory(location: str) -> list[_Entry]:
    with storage.upath(location).open("rb") as handle, zipfile.ZipFile(handle) as archive:
        entries = []
        for info in archive.infolist():
            raw = info.orig_filename.encode("utf-8" if info.flag_bits & UTF8_NAME else "cp437")
            mode = (info.external_attr >> 16) if info.create_system == 3 else 0  # 3: Unix
            entries.append(
                _Entry(
                    _name(raw, info.flag_bits),
                    info.header_offset,
                    info.file_size,
                    info.compress_size,
                    info.flag_bits,
                    info.compress_type,
                    mode,
                )
            )
        return sorted(entries, key=lambda entry: entry.offset)


def _salvaged(location: str) -> tuple[list[_Entry], int]:
    """Members found by walking local headers from the start, and the offset where that stopped."""
    entries: list[_Entry] = []
    with storage.upath(location).open("rb") as handle:
        at = 0
        while True:
            handle.seek(at)
            header = handle.read(LOCAL_HEADER.size)
            if len(header) < LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                return entries, at
            _, _, flags, method, _, _, _, compressed, size, name_length, extra_length = LOCAL_HEADER.unpack(header)
            name = _name(handle.read(name_length), flags)
            start = at + LOCAL_HEADER.size + name_length + extra_length
            if flags & DATA_DESCRIPTOR or compressed == 0xFFFFFFFF:  # sizes follow the data (or are ZIP64)
                compressed, size = _measured(handle, start, method)
                if compressed < 0:
                    return entries, at
                descriptor = 16 if flags & DATA_DESCRIPTOR else 0
            else:
                descriptor = 0
            entries.append(_Entry(name, at, size, compressed, flags, method, 0))
            at = start + compressed + descriptor


def _measured(handle: BinaryIO, start: int, method: int) -> tuple[int, int]:
    """(compressed, uncompressed) length of a deflated member whose sizes are not in its local header:
    deflate marks its own end. (-1, -1) where that cannot be known (a stored member)."""
    if method != DEFLATED:
        return -1, -1
    handle.seek(start)
    inflater, consumed, produced = zlib.decompressobj(-15), 0, 0
    while not inflater.eof:
        chunk = handle.read(1 << 20)
        if not chunk:
            return -1, -1
        try:
            produced += len(inflater.decompress(chunk))
        except zlib.error:
            return -1, -1
        consumed += len(chunk) - len(inflater.unused_data)
    return consumed, produced


def _ref(location: str, entry: _Entry, max_file_bytes: int) -> InputRef:
    def refused(status: str, error: str) -> InputRef:
        return InputRef(location, entry.name, entry.name, entry.offset, None, False, status, error, archive="zip")

    reason = _unsafe(entry.name)
    if reason:
        return refused(UNSAFE_MEMBER, f"refused: {reason}")
    if stat.S_IFMT(entry.mode) and not stat.S_ISREG(entry.mode):  # file-type bits kept, and not a file
        kind = "symbolic link" if stat.S_ISLNK(entry.mode) else "special file"
        return refused(NOT_A_FILE, f"a {kind} member, not a regular file: not followed")
    if entry.flags & ENCRYPTED:
        return refused(READ_ERROR, "encrypted member: Lineup does not take passwords; export it unencrypted")
    if entry.method not in (STORED, DEFLATED):
        return refused(READ_ERROR, f"compression method {entry.method} is not supported (stored or deflated only)")
    if entry.compressed > 0 and entry.size / entry.compressed > MAX_RATIO:
        return refused(
            TOO_LARGE,
            f"member declares {entry.size} bytes from {entry.compressed} compressed "
            f"({entry.size // entry.compressed}x): an implausible ratio for a photograph (a zip bomb?), not read",
        )
    if entry.size > max_file_bytes:
        return refused(
            TOO_LARGE,
            f"member is {entry.size} bytes, over embed.input.max_file_bytes={max_file_bytes}; raise it to read it",
        )
    return InputRef(location, entry.name, entry.name, entry.offset, entry.size, False, archive="zip")


def _unsafe(name: str) -> str | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute member name"
    if ".." in path.parts:
        return "member name climbs out of the archive (..)"
    return None


def read_zip_member(archive: BinaryIO, ref: InputRef) -> tuple[bytes | None, str | None]:
    """(bytes, None) of the member whose local header is at `ref.offset`, exactly its declared size, or
    (None, why not)."""
    assert ref.offset is not None and ref.size is not None
    try:
        archive.seek(ref.offset)
        header = archive.read(LOCAL_HEADER.size)
        if len(header) < LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            return None, f"no local header at byte {ref.offset} (the archive changed or is damaged)"
        _, _, flags, method, _, _, crc, _, _, name_length, extra_length = LOCAL_HEADER.unpack(header)
        archive.seek(ref.offset + LOCAL_HEADER.size + name_length + extra_length)
        if method == STORED:
            data = archive.read(ref.size)
        else:
            inflater, parts, produced = zlib.decompressobj(-15), [], 0
            while not inflater.eof and produced <= ref.size:
                chunk = archive.read(1 << 20)
                if not chunk:
                    break
                part = inflater.decompress(chunk, ref.size + 1 - produced)
                parts.append(part)
                produced += len(part)
            data = b"".join(parts)
    except (OSError, zlib.error) as error:
        return None, f"{type(error).__name__}: {error}"
    if len(data) != ref.size:
        return None, f"member holds {len(data)} bytes, its header says {ref.size} (truncated or damaged)"
    if not flags & DATA_DESCRIPTOR and crc and zlib.crc32(data) != crc:
        return None, "member fails its CRC check (damaged)"
    return data, None
