"""Plan (driver side): list every input file of an archive, cut the list into tasks. No image is read.

An input is one `InputRef`: a file in a folder, a member of a tar, or a row of a table. Tasks carry refs,
never image bytes, so the driver's memory does not grow with the archive.
"""

from __future__ import annotations

import fnmatch
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from jobs.common.errors import UserError
from jobs.embed.config import InputSettings


@dataclass(frozen=True)
class InputRef:
    """Where one image's bytes are: `path` alone, or `path` (a tar) plus `member`.

    `name` is how labels find the image: the path relative to the input folder, or the member name.
    """

    path: str
    member: str | None = None
    name: str = ""

    @property
    def source_path(self) -> str:
        """What the faces table records: the file path, or `archive.tar!member/name.jpg`."""
        return f"{self.path}!{self.member}" if self.member is not None else self.path


def list_inputs(settings: InputSettings) -> list[InputRef]:
    """Every file the input names, sorted; `UserError` naming the input when it is missing or empty."""
    root = Path(settings.path).expanduser()
    if not root.exists():
        raise UserError(f"embed.input.path {root} does not exist: point it at a folder, a tar file or a table")
    if settings.kind == "dir":
        refs = _list_folder(root, settings.glob)
    elif settings.kind == "tar":
        tars = sorted(root.rglob("*.tar*")) if root.is_dir() else [root]
        refs = [ref for tar in tars for ref in list_tar_members(tar, settings.glob)]
    else:
        raise ValueError("table inputs are planned by the job, not from the file system")
    if not refs:
        raise UserError(f"embed.input.path {root} holds no files matching {settings.glob!r}: nothing to embed")
    return refs


def _list_folder(root: Path, pattern: str) -> list[InputRef]:
    if not root.is_dir():
        raise UserError(f"embed.input.path {root} is a file; with embed.input.kind=dir give a folder")
    refs = []
    for folder, subfolders, files in os.walk(root, onerror=None):
        subfolders.sort()
        for name in sorted(files):
            if fnmatch.fnmatch(name, pattern):
                # absolute, not resolved: a symlink is recorded under its own name
                path = os.path.abspath(os.path.join(folder, name))
                refs.append(InputRef(path, None, os.path.relpath(path, root.absolute())))
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


def list_tar_members(tar_path: Path, pattern: str) -> list[InputRef]:
    """Regular-file members matching `pattern`, in archive order; unsafe names are kept (they become
    status rows) so that every member is accounted for."""
    try:
        with tarfile.open(tar_path, mode="r:*") as archive:
            members = [m for m in archive.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError) as error:
        raise UserError(f"embed.input.path {tar_path} is not a readable tar archive: {error}") from None
    return [
        InputRef(str(tar_path.resolve()), member.name, member.name)
        for member in members
        if fnmatch.fnmatch(PurePosixPath(member.name).name, pattern)
    ]


def cut_tasks(refs: list[InputRef], files_per_task: int) -> list[list[InputRef]]:
    """Consecutive runs of refs; refs of one tar stay together so a task opens each archive once."""
    return [refs[start : start + files_per_task] for start in range(0, len(refs), files_per_task)]
