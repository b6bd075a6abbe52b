"""`lineup setup`: everything a fresh machine needs after `pip install`, fetched once, verified, staged."""

from __future__ import annotations

import time
from typing import Any

from jobs.common.config import LineupConfig
from jobs.common.jars import load_lock, stage_jars


def run_setup(config: LineupConfig) -> dict[str, Any]:
    started = time.perf_counter()
    lock = load_lock()
    jars = stage_jars(config.spark.resolved_jars_dir(), lock)
    return {
        "job": "setup",
        "status": "ok",
        "delta": lock.coordinates,
        "jars_dir": str(config.spark.resolved_jars_dir()),
        "jars": len(jars),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
