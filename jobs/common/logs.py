"""Logging set-up shared by the CLI and `spark-submit` entry points: logs to stderr, one JSON line to stdout."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, not when logging was set up (a
    caller that swaps stderr, as a test harness or an embedding application does, keeps its logs)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - logging's own attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - StreamHandler.__init__ assigns it
        pass


def configure_logging(level: str = "INFO") -> None:
    """Send log records to stderr so stdout carries only the job's JSON summary line."""
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # py4j logs every gateway call at INFO; nobody running a job wants that.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def emit_summary(summary: dict[str, Any]) -> None:
    """Print the one JSON line a job or command ends with (the only thing written to stdout)."""
    sys.stdout.write(json.dumps(summary, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
