"""The one place configured locations are resolved: every table, folder and file a job reads or writes
goes through `resolve` or a `Locations` method; no other code builds paths from configured strings.

A local path (or `file://` URI) is expanded and made absolute, so executors and the runs table see the
same path the driver does. A URI with another scheme (`s3a://`, `hdfs://`, ...) is kept as written.
Defaults live under the data root: `<data_root>/tables/<name>`, `<data_root>/indexes/faces`, ...
"""

from __future__ import annotations

from pathlib import Path

from upath import UPath

from jobs.common.paths import default_data_root, default_pack_dir
from jobs.common.storage import is_remote, spark_uri, upath


def is_local(location: str) -> bool:
    """True for plain paths and `file://` URIs.

    >>> is_local("/data/faces"), is_local("file:///data/faces"), is_local("s3a://bucket/faces")
    (True, True, False)
    """
    return not is_remote(location)


def resolve(location: str) -> str:
    """A configured location as jobs use it: local paths absolute (`~` expanded), other URIs as Spark
    names them (`s3://` is read as `s3a://`).

    >>> resolve("file:///data/../data/faces"), resolve("s3://bucket/faces")
    ('/data/faces', 's3a://bucket/faces')
    """
    if not is_local(location):
        return spark_uri(location)
    path = location[len("file://") :] if location.startswith("file://") else location
    return str(Path(path).expanduser().resolve())


class Locations:
    """Defaults and overrides for every kind of location a job has, each with its own method."""

    def __init__(self, data_root: str | None, runs_table: str | None = None, erasures_table: str | None = None) -> None:
        self._data_root = data_root
        self._runs_table = runs_table
        self._erasures_table = erasures_table

    def data_root(self) -> UPath:
        return upath(resolve(self._data_root)) if self._data_root else upath(default_data_root())

    def table(self, given: str | None, default_name: str) -> str:
        """A table's location: the configured one, else `<data_root>/tables/<default_name>`."""
        return resolve(given) if given else str(self.data_root() / "tables" / default_name)

    def runs_table(self) -> str:
        """The runs table every job appends to (configured once, at the top level: `runs_table`)."""
        return self.table(self._runs_table, "runs")

    def erasures_table(self) -> str:
        """The erasure register (configured once, at the top level: `erasures_table`)."""
        return self.table(self._erasures_table, "erasures")

    def index_dir(self, given: str | None) -> UPath:
        return upath(resolve(given)) if given else self.data_root() / "indexes" / "faces"

    def report_dir(self, given: str | None) -> UPath:
        return upath(resolve(given)) if given else self.data_root() / "reports"

    def calibrations_root(self) -> UPath:
        """Where calibration records live (`<data_root>/calibrations/<id>.json`)."""
        return self.data_root()

    def pack_dir(self, given: str | None) -> UPath:
        return upath(resolve(given)) if given else upath(default_pack_dir())

    def input_path(self, given: str) -> str:
        return resolve(given)
