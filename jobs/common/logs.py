"""Logging set-up shared by the CLI and `spark-submit` entry points: logs to stderr, one JSON line to stdout."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO


@functools.cache  # opened once per process
def _submitter_stderr() -> TextIO | None:
    """Under `spark-submit`, the JVM runs this driver with its stderr merged into stdout (Spark's
    PythonRunner redirects the error stream), so `sys.stderr` would land beside the JSON line. The
    submitting JVM's own stderr is the log's proper place; on Linux it is reachable as its fd 2."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # set only when spark-submit started this process
        return None
    try:
        return open(f"/proc/{os.getppid()}/fd/2", "w", buffering=1, encoding="utf-8")  # for the process
    except OSError:
        return None


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, not when logging was set up (a
    caller that swaps stderr, as a test harness or an embedding application does, keeps its logs);
    under spark-submit, to the submitter's stderr (see `_submitter_stderr`)."""

    def __init__(self) -> None:
        super().__init__()
        self._submitter = _submitter_stderr()

    @property  # type: ignore[override]
    def stream(self) -> Any:  # logging's own attribute
        return self._submitter or sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


def configure_logging(level: str = "INFO") -> None:
    """Send log records to stderr so stdout carries only the job's JSON summary line."""
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)  # Python warnings go through the same handler, never to stdout
    # py4j logs every gateway call at INFO; nobody running a job wants that.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def error_line(text: str) -> None:
    """One line for a person reading the job's log (stderr, or the submitter's stderr under spark-submit)."""
    stream = _submitter_stderr() or sys.stderr
    stream.write(text.rstrip("\n") + "\n")
    stream.flush()


def emit_summary(summary: Mapping[str, Any]) -> None:
    """Print the one JSON line a job or command ends with (the only thing written to stdout)."""
    sys.stdout.write(json.dumps(dict(summary), sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
