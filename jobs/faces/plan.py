"""Plan (driver side): list every input entry of an archive, cut the list into tasks. No image is read.

An input is one `InputRef`: a file in a folder, a member of a tar, or a row of a table. Tasks carry refs,
never image bytes, so the driver's memory does not grow with image sizes. Every entry the input holds is
accounted for: what cannot be read (a symlink or device member, a member over the size limit, an unsafe
name, a symlink out of the input root) is a ref that already carries its status, and becomes a row.

Names are kept as the file system or the tar gives them (undecodable bytes as surrogate escapes, so the
file can be opened again); `display_name` turns them into text a table can hold.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from jobs.common import storage
from jobs.common.errors import UserError
from jobs.common.locations import resolve
from jobs.common.storage import upath

if TYPE_CHECKING:  # executors import this module for InputRef: pydantic's import is 0.1 s of a worker's start
    from jobs.faces.config import InputSettings

log = logging.getLogger(__name__)

NOT_A_FILE = "not_a_file"
TOO_LARGE = "too_large"
UNSAFE_MEMBER = "unsafe_member"
READ_ERROR = "read_error"

# Every suffix tarfile opens ("r:*" detects the compression from the bytes, not the name).
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
# How a compressed tar starts, and the compression's name (what `read.py` opens it with).
COMPRESSION_BY_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}


def raw_bytes(name: str) -> bytes:
    """The bytes a name stood for (surrogate escapes are the undecodable bytes of a non-UTF-8 name)."""
    return name.encode("utf-8", "surrogateescape")


def display_name(name: str) -> str:
    r"""The name as UTF-8 text: bytes that are not UTF-8 are written `\xNN` (Python's backslashreplace).

    >>> display_name(b"caf\xe9.jpg".decode("utf-8", "surrogateescape"))
    'caf\\xe9.jpg'
    >>> display_name("café.jpg")
    'café.jpg'
    """
    return raw_bytes(name).decode("utf-8", "backslashreplace")


def is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class InputRef:
    """Where one entry's bytes are: `path` alone, or `path` (a tar) plus `member`.

    `name` is how labels find the image: the path relative to the input folder, or the member name.
    For tar members, `offset`/`size` say where the member's bytes are in the (uncompressed) archive, so a
    task seeks straight to them and two members with one name stay two images. `status`/`error` are set
    when planning already knows the entry cannot be read. `tag` tells apart members that share a name.
    """

    path: str
    member: str | None = None
    name: str = ""
    offset: int | None = None
    size: int | None = None
    compressed: bool = False
    status: str | None = None
    error: str | None = None
    tag: str = ""

    @property
    def source_path(self) -> str:
        """What the faces table records: the file path, or `archive.tar!member/name.jpg` (with `#offset=N`
        when the archive holds several members of that name), in `display_name` form."""
        if self.member is None:
            return display_name(self.path)
        return f"{display_name(self.path)}!{display_name(self.member)}{self.tag}"

    @property
    def source_path_raw(self) -> bytes | None:
        """The exact bytes of the source path where its text form had to escape bytes, else None."""
        if is_utf8(self.path) and (self.member is None or is_utf8(self.member)):
            return None
        raw = raw_bytes(self.path)
        return raw if self.member is None else raw + b"!" + raw_bytes(self.member) + self.tag.encode()


def list_inputs(settings: InputSettings, spark=None) -> list[InputRef]:
    """Every entry the input names, sorted; `UserError` naming the input when it is missing or empty.
    A remote input (object store, HDFS) is listed page by page, and its tars are listed on the
    executors, one task per tar (`spark`), so the driver never reads an archive."""
    if storage.is_remote(settings.path):
        return _list_remote(resolve(settings.path), settings, spark)
    root = Path(settings.path).expanduser()
    if not root.exists():
        raise UserError(f"embed.input.path {root} does not exist: point it at a folder, a tar file or a table")
    if settings.kind == "dir":
        refs = _list_folder(root, settings)
    elif settings.kind == "tar":
        refs = _list_tars(root, settings, spark)
    else:
        raise ValueError("table inputs are planned by the job, not from the file system")
    if not refs:
        raise UserError(f"embed.input.path {root} holds no files matching {settings.glob!r}: nothing to embed")
    return refs


def _list_folder(root: Path, settings: InputSettings) -> list[InputRef]:
    if not root.is_dir():
        raise UserError(f"embed.input.path {root} is a file; with embed.input.kind=dir give a folder")
    refs = []
    for path in _walk_files(root):
        if fnmatch.fnmatch(os.path.basename(path), settings.glob):
            refs.append(_folder_ref(root, path, settings.follow_symlinks))
    return refs


def _walk_files(root: Path) -> list[str]:
    """Absolute paths (not resolved: a symlink keeps its own name) of every non-folder entry, sorted."""
    found: list[str] = []
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        found.extend(os.path.abspath(os.path.join(folder, name)) for name in sorted(files))
    return found


def _folder_ref(root: Path, path: str, follow_symlinks: bool) -> InputRef:
    name = os.path.relpath(path, root.absolute())
    if not follow_symlinks and os.path.islink(path):
        target = os.path.realpath(path)
        inside = os.path.commonpath([target, os.path.realpath(root)]) == os.path.realpath(root)
        if not inside:
            return InputRef(
                path,
                None,
                name,
                status=NOT_A_FILE,
                error=f"symbolic link to {display_name(target)}, outside the input root: not followed "
                "(set embed.input.follow_symlinks=true to read it)",
            )
    return InputRef(path, None, name)


def _list_tars(root: Path, settings: InputSettings, spark=None) -> list[InputRef]:
    """Members of a tar or a folder of tars: listed by the executors, one task per tar, when a session
    is given (the driver then never decompresses an archive), else here."""
    if not root.is_dir():
        if spark is not None:
            return _list_tars_on_executors(spark, [str(root)], settings, single=True)
        return list_tar_members(root, settings.glob, settings.max_file_bytes, in_folder=False)
    everything = _walk_files(root)
    tars = [path for path in everything if path.lower().endswith(TAR_SUFFIXES)]
    if len(tars) < len(everything):
        log.warning(
            "%d files under %s are not tar archives (%s) and are ignored",
            len(everything) - len(tars),
            root,
            ", ".join(TAR_SUFFIXES),
        )
    if spark is not None and tars:
        return _list_tars_on_executors(spark, tars, settings, single=False)
    return [ref for tar in tars for ref in list_tar_members(Path(tar), settings.glob, settings.max_file_bytes)]


def _list_remote(location: str, settings: InputSettings, spark) -> list[InputRef]:
    storage.check_reachable(location, "embed.input.path")
    root = storage.upath(location)
    fs, root_key = root.fs, root.path.rstrip("/")
    single = fs.isfile(root_key)
    if single:
        objects = {root_key: fs.info(root_key)}
    else:
        objects = fs.find(root_key, detail=True)  # paged listing: a page of keys per request, sizes included
    if not objects:
        raise UserError(f"embed.input.path {location} does not exist or holds nothing: point it at a folder or a tar")
    scheme = storage.scheme_of(location)
    uri_of = {key: f"{scheme}://{key}" for key in objects}
    if settings.kind == "tar":
        tars = sorted(uri_of[k] for k in objects if k.lower().endswith(TAR_SUFFIXES) or k == root_key)
        refs = _list_tars_on_executors(spark, tars, settings, single=single)
    else:
        refs = []
        for key in sorted(objects):
            name = key[len(root_key) :].lstrip("/") or os.path.basename(key)
            if not fnmatch.fnmatch(os.path.basename(key), settings.glob):
                continue
            size = int(objects[key].get("size") or 0)
            if size > settings.max_file_bytes:
                error = f"file is {size} bytes, over embed.input.max_file_bytes={settings.max_file_bytes}; raise it"
                refs.append(InputRef(uri_of[key], None, name, size=size, status=TOO_LARGE, error=error))
            else:
                refs.append(InputRef(uri_of[key], None, name, size=size))
    if not refs:
        raise UserError(f"embed.input.path {location} holds no files matching {settings.glob!r}: nothing to embed")
    return refs


def _list_tars_on_executors(spark, tars: list[str], settings: InputSettings, single: bool) -> list[InputRef]:
    """Each tar's members, listed by one task per tar (the archive streams through the executor once)."""

    if spark is None:
        raise ValueError("listing tars on the executors needs the SparkSession")
    pattern, limit = settings.glob, settings.max_file_bytes

    def members(tar: str) -> list[str]:
        return [json.dumps(ref.__dict__) for ref in list_tar_members(tar, pattern, limit, in_folder=True)]

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


def _member_refs(path: str, pattern: str, max_file_bytes: int, compressed: bool) -> list[tuple[int, InputRef]]:
    """(header offset, ref) of every member the plan keeps."""
    refs: list[tuple[int, InputRef]] = []
    regular: dict[str, tarfile.TarInfo] = {}  # the latest regular member of each name: hard links point there
    with storage.upath(path).open("rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as archive:
        while (member := archive.next()) is not None:
            archive.members.clear()  # type: ignore[attr-defined]  # TarFile keeps each header; the plan keeps refs
            if member.isreg():
                regular[member.name] = member
            if member.isdir() or not fnmatch.fnmatch(PurePosixPath(member.name).name, pattern):
                continue
            refs.append((member.offset, _member_ref(path, member, regular, max_file_bytes, compressed)))
    return refs


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


def cut_tasks(
    refs: list[InputRef], files_per_task: int, slots: int | None = None, queued_after: int = 0
) -> list[list[InputRef]]:
    """Consecutive runs of refs, at most `files_per_task` each; all refs of one compressed tar go to one
    task, because reaching a member of a compressed stream means decompressing everything before it.

    With `slots` (how many tasks run at once), tasks shrink toward the end (guided scheduling: each
    takes 1/(2 x slots) of what is left, at least `MIN_FILES_PER_TASK`), so the last wave is short and
    no core idles while another finishes a long task. `queued_after` files (later chunks' tasks, queued
    behind these) count as left: only the run's end needs short tasks, not every chunk's.

    >>> refs = [InputRef(str(i)) for i in range(100)]
    >>> [len(t) for t in cut_tasks(refs, 32)]
    [32, 32, 32, 4]
    >>> [len(t) for t in cut_tasks(refs, 32, slots=2)]
    [25, 18, 16, 16, 16, 9]
    >>> [len(t) for t in cut_tasks(refs, 32, slots=2, queued_after=1000)]
    [32, 32, 32, 4]
    """
    tasks: list[list[InputRef]] = []
    current: list[InputRef] = []
    limit = _task_size(len(refs), files_per_task, slots, queued_after)
    for done, ref in enumerate(refs):
        joins_stream = ref.compressed and current and current[-1].compressed and current[-1].path == ref.path
        if len(current) >= limit and not joins_stream:
            tasks.append(current)
            current = []
            limit = _task_size(len(refs) - done, files_per_task, slots, queued_after)
        current.append(ref)
    if current:
        tasks.append(current)
    return tasks


# Below this, a task's fixed cost shows: a PySpark task costs ~50-85 ms beyond its work on a 2-vCPU VM
# (52 empty mapInArrow tasks on local[2]: ~1.7 s), ~10 images' embedding.
MIN_FILES_PER_TASK = 16


def _task_size(remaining: int, files_per_task: int, slots: int | None, queued_after: int = 0) -> int:
    if slots is None:
        return files_per_task
    left = remaining + queued_after
    size = max(min(files_per_task, left // (2 * slots)), min(MIN_FILES_PER_TASK, files_per_task))
    # a remainder of a few files would cost more as its own task than it adds to this one
    return remaining if remaining - size < MIN_FILES_PER_TASK // 4 and remaining <= files_per_task else size


def source_prefix(archive) -> str:
    """How the faces table's source_path starts for this archive's images (and for no other archive's):
    `dir/...` for folders (and folders of tars), `file.tar!member` for one tar, `table#id` for tables."""

    path = archive.path.rstrip("/")
    if archive.kind == "table":
        return f"{path}#"
    if archive.kind == "tar" and not upath(path).is_dir():
        return f"{path}!"
    return f"{path}/"
