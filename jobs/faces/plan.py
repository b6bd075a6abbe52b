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
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.common import storage
from jobs.common.errors import UserError
from jobs.common.locations import resolve
from jobs.common.storage import upath
from jobs.faces.refs import NOT_A_FILE, TOO_LARGE, InputRef, display_name
from jobs.faces.tars import ARCHIVE_SUFFIXES, list_archive_members, list_tars_on_executors

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

if TYPE_CHECKING:  # executors import this module for InputRef: pydantic's import is 0.1 s of a worker's start
    from jobs.faces.config import InputSettings

log = logging.getLogger(__name__)


def list_inputs(settings: InputSettings, spark: SparkSession | None = None) -> list[InputRef]:
    """Every entry the input names, sorted; `UserError` naming the input when it is missing or empty.
    A remote input (object store, HDFS) is listed page by page, and its tars are listed on the
    executors, one task per tar (`spark`), so the driver never reads an archive."""
    if storage.is_remote(settings.path):
        if spark is None:
            raise RuntimeError("listing a remote input needs a SparkSession: a bug, please report it")
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


def _list_tars(root: Path, settings: InputSettings, spark: SparkSession | None = None) -> list[InputRef]:
    """Members of a tar or a folder of tars: listed by the executors, one task per tar, when a session
    is given (the driver then never decompresses an archive), else here."""
    if not root.is_dir():
        if spark is not None:
            return list_tars_on_executors(spark, [str(root)], settings, single=True)
        return list_archive_members(root, settings.glob, settings.max_file_bytes, in_folder=False)
    everything = _walk_files(root)
    tars = [path for path in everything if path.lower().endswith(ARCHIVE_SUFFIXES)]
    if len(tars) < len(everything):
        log.warning(
            "%d files under %s are not tar archives (%s) and are ignored",
            len(everything) - len(tars),
            root,
            ", ".join(ARCHIVE_SUFFIXES),
        )
    if spark is not None and tars:
        return list_tars_on_executors(spark, tars, settings, single=False)
    return [ref for tar in tars for ref in list_archive_members(Path(tar), settings.glob, settings.max_file_bytes)]


def _list_remote(location: str, settings: InputSettings, spark: SparkSession) -> list[InputRef]:
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
        tars = sorted(uri_of[k] for k in objects if k.lower().endswith(ARCHIVE_SUFFIXES) or k == root_key)
        refs = list_tars_on_executors(spark, tars, settings, single=single)
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


def source_prefix(archive: InputSettings) -> str:
    """How the faces table's source_path starts for this archive's images (and for no other archive's):
    `dir/...` for folders (and folders of tars), `file.tar!member` for one tar, `table#id` for tables."""

    path = archive.path.rstrip("/")
    if archive.kind == "table":
        return f"{path}#"
    if archive.kind == "tar" and not upath(path).is_dir():
        return f"{path}!"
    return f"{path}/"
