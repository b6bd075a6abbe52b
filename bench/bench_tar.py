"""Tar-reading benchmark: the same images embedded from one N-member tar and from loose files, in one
run, as a ratio (target: tar wall time within 1.3x of loose files at 20,000 members). Before members
were addressed by offset, every task reopened the tar and rescanned every header, so the tar's cost grew
with members x tasks. Prints one JSON line.

The images are small generated JPEGs (no faces: decode + detect only), which makes reading the larger
share of the work, so this is the harsher test of the reader. Session start is excluded from both.

Usage: .venv/bin/python -m bench.bench_tar [--members 20000] [--files-per-task 128]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from jobs.common.config import load_config
from jobs.common.spark import get_spark
from jobs.embed.config import EmbedConfig
from jobs.embed.job import run_embed
from tests.fixtures.images import jpeg

log = logging.getLogger("bench_tar")


def write_images(root: Path, count: int) -> list[Path]:
    """`count` distinct small JPEGs in folders of 200 (distinct bytes: each is a new image)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    paths = []
    for number in range(count):
        image = base.copy()
        image[number % 96, (number // 96) % 96] = [number % 256, (number // 256) % 256, 7]
        path = root / f"part{number // 200:04d}" / f"img{number:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(image))
        paths.append(path)
    return paths


def embed(spark, input_path: Path, table: Path, kind: str, files_per_task: int) -> tuple[float, dict]:
    config = load_config(
        EmbedConfig,
        None,
        [
            f"embed.input.path={input_path}",
            f"embed.input.kind={kind}",
            f"embed.table_path={table}",
            f"embed.files_per_task={files_per_task}",
            "embed.labels.subject_from_path=null",
        ],
    )
    started = time.perf_counter()
    summary = dict(run_embed(config, spark))  # the result is read-only: this adds the bench's own fields
    return time.perf_counter() - started, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--files-per-task", type=int, default=128)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-tar-") as scratch:
        root = Path(scratch)
        paths = write_images(root / "loose", args.members)
        with tarfile.open(root / "images.tar", "w") as archive:
            for path in paths:
                archive.add(path, arcname=str(path.relative_to(root / "loose")))
        spark = get_spark(load_config(EmbedConfig, None, ["embed.input.path=.", f"spark.master=local[{cores}]"]).spark)
        embed(spark, root / "loose" / "part0000", root / "warmup", "dir", args.files_per_task)  # warm workers
        loose_s, loose = embed(spark, root / "loose", root / "t_loose", "dir", args.files_per_task)
        tar_s, tarred = embed(spark, root / "images.tar", root / "t_tar", "tar", args.files_per_task)
        assert loose["files_processed"] == tarred["files_processed"] == args.members
        assert loose["by_status"] == tarred["by_status"], (loose["by_status"], tarred["by_status"])
        spark.stop()
    print(
        json.dumps(
            {
                "bench": "tar_vs_loose",
                "members": args.members,
                "files_per_task": args.files_per_task,
                "tasks": -(-args.members // args.files_per_task),
                "loose_s": round(loose_s, 1),
                "tar_s": round(tar_s, 1),
                "tar_over_loose": round(tar_s / loose_s, 3),
                "target": "<= 1.3",
                "statuses": tarred["by_status"],
                "machine": f"{platform.machine()}, {cores} cores, local[{cores}]",
                "load_average_before_after": [round(v, 2) for v in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
