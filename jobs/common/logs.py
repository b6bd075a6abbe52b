"""Logging set-up shared by the CLI and `spark-submit` entry points: logs to stderr, one JSON line to stdout."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


def configure_logging(level: str = "INFO") -> None:
    """Send log records to stderr so stdout carries only the job's JSON summary line."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # py4j logs every gateway call at INFO; nobody running a job wants that.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def emit_summary(summary: dict[str, Any]) -> None:
    """Print the one JSON line a job or command ends with (the only thing written to stdout)."""
    sys.stdout.write(json.dumps(summary, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
