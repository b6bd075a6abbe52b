"""Worker (executor side, plain Python): read one task's images, run the pack, make faces-table rows.

Every input yields at least one row: one per face with status `ok`, or a single status row saying why
there is none. Images already in the table for this model (by content sha256) are skipped before any
pixel is decoded. The FacePipeline is built once per Python worker process and reused across tasks.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import logging
import lzma
import os
import re
import stat
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from jobs.embed.ids import STATUS_ROW_INDEX, face_id_of, image_id_of
from jobs.embed.plan import NOT_A_FILE, READ_ERROR, TOO_LARGE, InputRef, display_name

log = logging.getLogger(__name__)


class KnownImages:
    """Image ids already embedded with this model: a sorted array of 64-bit prefixes (8 bytes each),
    small enough to broadcast for tens of millions of images."""

    def __init__(self, image_ids: Iterable[str]) -> None:
        self.prefixes = np.unique(np.array([int(i[:16], 16) for i in image_ids], dtype=np.uint64))

    def __contains__(self, image_id: str) -> bool:
        key = np.uint64(int(image_id[:16], 16))
        position = int(np.searchsorted(self.prefixes, key))
        return position < len(self.prefixes) and self.prefixes[position] == key

    def __len__(self) -> int:
        return len(self.prefixes)


@dataclass(frozen=True)
class Labeller:
    """subject_id and attributes for an image, from a labels table keyed by the image's name (path
    relative to the input folder, tar member name or table id) and/or from regexes: subject_id from a
    regex on the name, attributes from the named groups of a regex on the file name. The table wins
    where both give a value."""

    subject_from_path: str | None = None
    attributes_from_name: str | None = None
    table: dict[str, tuple[str | None, dict[str, str]]] | None = None

    def subject(self, name: str) -> str | None:
        if self.table is not None and name in self.table and self.table[name][0] is not None:
            return self.table[name][0]
        if not self.subject_from_path:
            return None
        match = re.search(self.subject_from_path, name)
        if not match:
            return None
        return match.groupdict().get("subject") or (match.group(1) if match.groups() else match.group(0))

    def attributes(self, name: str) -> list[tuple[str, str]] | None:
        found: dict[str, str] = {}
        if self.attributes_from_name:
            match = re.search(self.attributes_from_name, PurePosixPath(name).name)
            if match:
                found.update({key: value for key, value in match.groupdict().items() if value is not None})
        if self.table is not None and name in self.table:
            found.update(self.table[name][1])
        return sorted(found.items()) if found else None


@dataclass
class Loaded:
    """One input's bytes, or why they could not be read. `ref_name` is the source path as text;
    `raw_path` its exact bytes where the text had to escape some (a non-UTF-8 name), else None."""

    ref_name: str
    label_name: str
    data: bytes | None
    status: str | None = None
    error: str | None = None
    raw_path: bytes | None = None


def read_refs(refs: list[InputRef], max_file_bytes: int) -> Iterator[Loaded]:
    """Bytes of each ref: folder files after a stat (regular files only, size bounded), tar members by
    seeking to their offset. An archive stays open while consecutive refs come from it."""
    archive: tuple[str, BinaryIO | OSError] | None = None
    try:
        for ref in refs:
            if ref.status is not None:
                yield _loaded(ref, None, ref.status, ref.error)
            elif ref.member is None:
                yield _read_file(ref, max_file_bytes)
            else:
                if archive is None or archive[0] != ref.path:
                    _close(archive)
                    archive = (ref.path, _open_archive(ref))
                handle = archive[1]
                if isinstance(handle, OSError):
                    yield _loaded(ref, None, READ_ERROR, f"the archive cannot be opened: {_describe(handle)}")
                else:
                    yield _read_member(handle, ref)
    finally:
        _close(archive)


def _close(archive: tuple[str, BinaryIO | OSError] | None) -> None:
    if archive is not None and not isinstance(archive[1], OSError):
        archive[1].close()


def table_item(prefix: str, row_id: str, content: bytes | None, max_file_bytes: int) -> Loaded:
    """One row of a table of image bytes (`prefix` names the table), bounded like a file."""
    if content is None:
        return Loaded(prefix + row_id, row_id, None, READ_ERROR, "null image bytes")
    if len(content) > max_file_bytes:
        error = f"{len(content)} bytes, over embed.input.max_file_bytes={max_file_bytes}; raise it to read it"
        return Loaded(prefix + row_id, row_id, None, TOO_LARGE, error)
    return Loaded(prefix + row_id, row_id, content)


def _loaded(ref: InputRef, data: bytes | None, status: str | None = None, error: str | None = None) -> Loaded:
    return Loaded(ref.source_path, display_name(ref.name), data, status, error, ref.source_path_raw)


def _describe(error: OSError) -> str:
    return f"{type(error).__name__}: {error.strerror or error}"


def _read_file(ref: InputRef, max_file_bytes: int) -> Loaded:
    try:
        info = os.stat(ref.path)  # follows a symlink the plan allowed; the kind is checked before any read
        refusal = _refusal(info, max_file_bytes)
        if refusal:
            return _loaded(ref, None, *refusal)
        # O_NONBLOCK: if the entry was swapped for a FIFO since the stat, opening must not wait for a writer.
        with os.fdopen(os.open(ref.path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            refusal = _refusal(os.fstat(handle.fileno()), max_file_bytes)
            if refusal:
                return _loaded(ref, None, *refusal)
            data = handle.read(max_file_bytes + 1)
    except OSError as error:
        return _loaded(ref, None, READ_ERROR, _describe(error))
    if len(data) > max_file_bytes:
        return _loaded(ref, None, TOO_LARGE, f"file grew past embed.input.max_file_bytes={max_file_bytes} while read")
    return _loaded(ref, data)


def _refusal(info: os.stat_result, max_file_bytes: int) -> tuple[str, str] | None:
    if not stat.S_ISREG(info.st_mode):
        return NOT_A_FILE, f"a {_file_kind(info.st_mode)}, not a regular file"
    if info.st_size > max_file_bytes:
        return TOO_LARGE, (
            f"file is {info.st_size} bytes, over embed.input.max_file_bytes={max_file_bytes}; raise it to read it"
        )
    return None


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "folder"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "special file")


_OPENERS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}


def _open_archive(ref: InputRef) -> BinaryIO | OSError:
    """The archive's uncompressed bytes as a seekable stream (a compressed one decompresses forward), or
    the error that kept it closed."""
    try:
        if not ref.compressed:
            return open(ref.path, "rb")
        with open(ref.path, "rb") as handle:
            head = handle.read(6)
        opener = next((o for magic, o in _OPENERS.items() if head.startswith(magic)), None)
        if opener is None:
            return OSError(f"{display_name(ref.path)} is no longer a compressed tar")
        return opener(ref.path, "rb")  # type: ignore[no-any-return]
    except OSError as error:
        return error


def _read_member(archive: BinaryIO, ref: InputRef) -> Loaded:
    """Exactly the member's `size` bytes at its `offset`: nothing else of the archive is read or kept."""
    assert ref.offset is not None and ref.size is not None
    try:
        archive.seek(ref.offset)
        data = archive.read(ref.size)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as error:
        return _loaded(ref, None, READ_ERROR, f"{type(error).__name__}: {error}")
    if len(data) != ref.size:
        missing = ref.size - len(data)
        return _loaded(ref, None, READ_ERROR, f"archive ends {missing} bytes inside the member (truncated)")
    return _loaded(ref, data)


@dataclass(frozen=True)
class RowContext:
    model_id: str
    run_id: str
    labeller: Labeller
    embedded_at: dt.datetime


def embed_loaded(
    items: Iterable[Loaded], pipeline, known: KnownImages, context: RowContext, batch_images: int
) -> Iterator[dict[str, Any]]:
    """Rows for every loaded input not already known; known images yield nothing (counted by the caller)."""
    batch: list[tuple[Loaded, str]] = []
    for item in items:
        if item.data is None:
            # A file that cannot be read has no content id: key its row by path so reruns replace it.
            yield _status_row(item, None, context, item.status or READ_ERROR, item.error)
            continue
        image_id = image_id_of(item.data)
        if image_id in known:
            continue
        batch.append((item, image_id))
        if len(batch) >= batch_images:
            yield from _process_batch(batch, pipeline, context)
            batch = []
    if batch:
        yield from _process_batch(batch, pipeline, context)


def _process_batch(batch: list[tuple[Loaded, str]], pipeline, context: RowContext) -> Iterator[dict[str, Any]]:
    results = pipeline.process_bytes([item.data for item, _ in batch])
    for (item, image_id), result in zip(batch, results):
        if result.status != "ok":
            yield _status_row(item, image_id, context, result.status, result.error, result.width, result.height)
            continue
        for face in result.faces:
            row = _base_row(item, image_id, context, "ok", None, result.width, result.height)
            x1, y1, x2, y2 = (float(v) for v in face.bbox)
            row.update(
                face_id=face_id_of(image_id, context.model_id, face.face_index),
                face_index=face.face_index,
                bbox={"x1": x1, "y1": y1, "x2": x2, "y2": y2},
                landmarks=[float(v) for v in face.landmarks.reshape(-1)],
                det_score=float(face.det_score),
                quality=float(face.quality),
                embedding=face.embedding.astype(np.float32).tolist(),
            )
            yield row


def _base_row(
    item: Loaded,
    image_id: str | None,
    context: RowContext,
    status: str,
    error: str | None,
    width: int | None = None,
    height: int | None = None,
) -> dict[str, Any]:
    return {
        "face_id": None,
        "image_id": image_id,
        "source_path": item.ref_name,
        "source_path_raw": item.raw_path,
        "face_index": STATUS_ROW_INDEX,
        "bbox": None,
        "landmarks": None,
        "det_score": None,
        "quality": None,
        "embedding": None,
        "model_id": context.model_id,
        "status": status,
        "error": error,
        "subject_id": context.labeller.subject(item.label_name),
        "attributes": context.labeller.attributes(item.label_name),
        "image_width": width,
        "image_height": height,
        "run_id": context.run_id,
        "embedded_at": context.embedded_at,
    }


def _status_row(
    item: Loaded,
    image_id: str | None,
    context: RowContext,
    status: str,
    error: str | None,
    width: int | None = None,
    height: int | None = None,
) -> dict[str, Any]:
    row = _base_row(item, image_id, context, status, error, width, height)
    row["face_id"] = face_id_of(image_id or f"path:{item.ref_name}", context.model_id, STATUS_ROW_INDEX)
    return row
