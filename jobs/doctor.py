"""`lineup doctor`: versions, staged jars and a measured SparkSession start, as one JSON line.

It checks what a job needs, in the order a failure is cheapest to find: Java on PATH, the staged jars
(re-hashed), then a real local session that writes and reads a Delta table.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from jobs.common.config import LineupConfig
from jobs.common.errors import UserError
from jobs.common.jars import load_lock, verify_staged
from jobs.common.spark import get_spark


def java_version() -> str:
    """The `java -version` string of the Java on PATH; a `UserError` naming the fix when there is none."""
    java = shutil.which("java")
    if java is None:
        raise UserError("java not found on PATH: install Java 17 (e.g. `apt-get install openjdk-17-jre-headless`)")
    output = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    match = re.search(r'version "([^"]+)"', output)
    return match.group(1) if match else output.strip().splitlines()[0]


def package_versions() -> dict[str, str]:
    names = ["pyspark", "delta-spark", "onnxruntime", "faiss-cpu", "numpy", "pyarrow"]
    return {name: metadata.version(name) for name in names}


def cpu_features(cpuinfo: str | None = None) -> dict[str, Any]:
    """What the INT8 pack's kernel will be on this host: onnxruntime runs its uint8 x int8 products on VNNI
    instructions where the CPU has them (AVX512-VNNI or AVX-VNNI), else on AVX2, where they gain less
    (docs/performance.md gives the figure measured on each kind).

    >>> cpu_features("flags : fpu avx2 avx512_vnni")["int8_kernel"]
    'VNNI (avx512_vnni)'
    >>> cpu_features("flags : fpu avx2")["vnni"]
    False
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {"vnni": None, "int8_kernel": f"unknown on {platform.system()} (no /proc/cpuinfo)"}
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[-1].split())
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni"})
    kernel = f"VNNI ({', '.join(vnni)})" if vnni else ("AVX2, no VNNI" if "avx2" in flags else "no AVX2 or VNNI")
    return {"vnni": bool(vnni), "avx2": "avx2" in flags, "int8_kernel": kernel}


def run_doctor(config: LineupConfig) -> dict[str, Any]:
    """Collect the report; raises `UserError` with a one-line reason when something is missing."""
    report: dict[str, Any] = {"job": "doctor", "python": platform.python_version(), "java": java_version()}
    report.update(package_versions())
    report["cpu"] = cpu_features()
    lock = load_lock()
    jars = verify_staged(config.spark.resolved_jars_dir(), lock)
    report["delta_jars_version"] = lock.delta_version
    report["delta_jars"] = [str(path) for path in jars]

    started = time.perf_counter()
    spark = get_spark(config.spark, app_name="lineup-doctor")
    spark.range(1).count()
    report["spark_session_start_s"] = round(time.perf_counter() - started, 2)
    report["spark"] = spark.version
    report["spark_master"] = spark.sparkContext.master
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lineup-doctor-") as scratch:
        table_path = str(Path(scratch) / "delta_check")
        spark.range(3).write.format("delta").save(table_path)
        rows = spark.read.format("delta").load(table_path).count()
    report["delta_write_read_s"] = round(time.perf_counter() - started, 2)
    if rows != 3:
        raise UserError(f"Delta round trip read {rows} rows instead of 3: the staged jars do not work")
    report["measured_on"] = f"{platform.node()} ({platform.machine()}, {_cpu_count()} CPUs)"
    report["status"] = "ok"
    return report


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
