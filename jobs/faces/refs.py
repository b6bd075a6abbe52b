"""One entry of an input, by reference: a file in a folder, a member of a tar, or a row of a table, with
the status it already carries when it cannot be read. Names are kept as the file system or the tar gives
them (undecodable bytes as surrogate escapes, so the file can be opened again); `display_name` turns them
into text a table can hold."""

from __future__ import annotations

from dataclasses import dataclass

NOT_A_FILE = "not_a_file"


TOO_LARGE = "too_large"


UNSAFE_MEMBER = "unsafe_member"


READ_ERROR = "read_error"


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
    archive: str = "tar"  # for a member: the kind of archive it is in (tar, zip)

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
