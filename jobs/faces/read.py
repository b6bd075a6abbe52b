"""Reading one task's inputs on an executor (plain Python, no Spark): folder files after a stat (regular
files only, at most `max_file_bytes`, opened non-blocking so a FIFO never hangs), tar members by seeking
to the offset the plan recorded (a compressed tar decompresses forward, once), table rows as given.
Every ref yields exactly one `Loaded`: bytes, or a status and the reason."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from jobs.common import storage
from jobs.faces.refs import NOT_A_FILE, READ_ERROR, TOO_LARGE, InputRef, display_name
from jobs.faces.tars import compression_of
from jobs.faces.zips import read_zip_member


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
    prefetch = _Prefetch(refs)
    try:
        for ref in refs:
            if ref.status is not None:
                yield _loaded(ref, None, ref.status, ref.error)
            elif ref.member is None and storage.is_remote(ref.path):
                yield _remote_file(ref, prefetch.get(ref.path), max_file_bytes)
            elif ref.member is None:
                yield _read_file(ref, max_file_bytes)
            else:
                if archive is None or archive[0] != ref.path:
                    _close(archive)
                    archive = (ref.path, _open_archive(ref))
                handle = archive[1]
                if isinstance(handle, OSError):
                    yield _loaded(ref, None, READ_ERROR, f"the archive cannot be opened: {_describe(handle)}")
                elif ref.archive == "zip":
                    data, error = read_zip_member(handle, ref)
                    yield _loaded(ref, data) if error is None else _loaded(ref, None, READ_ERROR, error)
                else:
                    yield _read_member(handle, ref)
    finally:
        prefetch.close()
        _close(archive)


FETCH_AHEAD = 32  # remote files requested at once: hides the per-request latency of an object store


class _Prefetch:
    """A task's remote files, fetched a batch ahead of the reader on a background thread (concurrent
    requests within a batch), so an object store's latency overlaps with decoding and embedding. At most
    two batches are held at a time."""

    def __init__(self, refs: list[InputRef]) -> None:
        paths = [r.path for r in refs if r.status is None and r.member is None and storage.is_remote(r.path)]
        self._batches = [paths[i : i + FETCH_AHEAD] for i in range(0, len(paths), FETCH_AHEAD)]
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lineup-prefetch") if paths else None
        self._submitted = 0
        self._ready: dict[str, bytes | BaseException] = {}
        self._pending = self._submit_next()

    def _submit_next(self) -> Future | None:
        if self._pool is None or self._submitted >= len(self._batches):
            return None
        batch = self._batches[self._submitted]
        self._submitted += 1
        return self._pool.submit(_fetch, batch)

    def get(self, path: str) -> bytes | BaseException:
        while path not in self._ready:
            if self._pending is None:  # a path listed twice: its first copy was handed out already
                return _fetch([path]).get(path, FileNotFoundError(path))
            self._ready.update(self._pending.result())
            self._pending = self._submit_next()
        return self._ready.pop(path)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _fetch(paths: list[str]) -> dict[str, bytes | BaseException]:
    """The files' bytes (or the error of each), requested concurrently: S3 objects through Arrow's C++
    S3 client (a fifth of s3fs's CPU per request, measured), other stores through fsspec."""
    if storage.scheme_of(paths[0]) in ("s3", "s3a"):
        return storage.s3_cat(paths)
    fs = storage.upath(paths[0]).fs
    keys = {storage.upath(path).path: path for path in paths}
    found = fs.cat(list(keys), on_error="return")
    return {keys[key]: value for key, value in found.items() if key in keys}


def _remote_file(ref: InputRef, data: bytes | BaseException, max_file_bytes: int) -> Loaded:
    if isinstance(data, BaseException):
        return _loaded(ref, None, READ_ERROR, f"{type(data).__name__}: {storage.redact(str(data))[:200]}")
    if len(data) > max_file_bytes:  # grew since it was listed
        return _loaded(ref, None, TOO_LARGE, f"file grew past embed.input.max_file_bytes={max_file_bytes}")
    return _loaded(ref, data)


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


_OPENERS: dict[str, Callable[[Any, str], Any]] = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}


def _open_archive(ref: InputRef) -> BinaryIO | OSError:
    """The archive's uncompressed bytes as a seekable stream (a compressed one decompresses forward), or
    the error that kept it closed."""
    try:
        if not ref.compressed:
            return storage.upath(ref.path).open("rb")
        compression = compression_of(ref.path)
        if compression is None:
            return OSError(f"{display_name(ref.path)} is no longer a compressed tar")
        source = storage.upath(ref.path).open("rb") if storage.is_remote(ref.path) else ref.path
        stream: BinaryIO = _OPENERS[compression](source, "rb")
        return stream
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
