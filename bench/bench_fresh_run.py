"""The fixed cost of a scheduled run: `lineup embed` started as a fresh process each time (a new JVM, as
every `spark-submit` is), over an archive whose images are all already in the faces table. Prints one
JSON line.

For each archive size, run 1 fills a new table; runs 2..N find every image known. Each run's cost
beyond session start is the sum of its phases after `session_start` (plan, prepare_table, find_known,
summary, record_run): the issue's "fixed per-run cost" target (< 5 s). The session start itself, a bare
local[2] SparkSession in the same process, is reported beside it, with the wall time of the whole
process (Python start and JVM exit included) and the load average before each run.

Then the daily run of a growing archive: as many new images again join the folder and a fresh process
embeds them into the existing table (its Python workers and first Delta commit cold, as a
`spark-submit`'s are); its rate beyond session start is set beside a process pool's over the same new
images (one process per core, one onnxruntime thread each, pipelines loaded before the clock: the
physical reference of `bench_embed`).

With --without-warmup the day's run is repeated with `embed.warmup=false` on a copy of the same table,
after the process pool: what starting the Python workers and their pipelines while the driver plans
(jobs/faces/warmup.py) gains.

Usage: .venv/bin/python -m bench.bench_fresh_run [--sizes 100 2000] [--reruns 2] [--without-warmup]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_embed import link_images, process_pool
from bench.common import data_root


def lineup_embed(folder: Path, table: Path, runs_table: Path, *settings: str) -> dict:
    """One `lineup embed` process: its summary, wall time and the load average it started under."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            "embed",
            "--conf",
            "conf/embed.yaml",
            "--set",
            f"embed.input.path={folder}",
            "--set",
            f"embed.table_path={table}",
            "--set",
            f"runs_table={runs_table}",
            *[part for setting in settings for part in ("--set", setting)],
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, SPARK_LOCAL_IP="127.0.0.1"),
        check=False,
    )
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"lineup embed failed (exit {done.returncode}): {done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    timings = summary["timings_s"]
    # Phases nest (embed_and_commit holds find_known, embed, commit): the top-level ones are summed.
    top = ("plan", "prepare_table", "embed_and_commit", "summary", "record_run")
    return {
        "files_processed": summary["files_processed"],
        "files_skipped_known": summary["files_skipped_known"],
        "known_searched_by": summary.get("known_searched_by"),
        "pipelines_built_by_tasks": summary.get("pipelines_built_by_tasks"),
        "session_start_s": timings["session_start"],
        "beyond_session_start_s": round(sum(timings.get(name, 0.0) for name in top), 2),
        "process_wall_s": round(wall_s, 2),
        "timings_s": timings,
        "load_average_1m": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 2000])
    parser.add_argument("--reruns", type=int, default=2)
    parser.add_argument(
        "--without-warmup",
        action="store_true",
        help="also run the day's new images with embed.warmup=false (a copy of the same table), as a ratio",
    )
    args = parser.parse_args()
    files = sorted((data_root() / "lfw" / "images").glob("*/*.jpg"))
    random.Random(0).shuffle(files)  # new images from other people than the first run's, as a day's would be
    report: dict = {"machine": f"{os.cpu_count()} CPUs, local[2] (conf/embed.yaml)", "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-fresh-") as scratch:
        for size in args.sizes:
            root = Path(scratch) / str(size)
            folder = link_images(files[:size], root / "images")
            runs = [lineup_embed(folder, root / "faces", root / "runs") for _ in range(1 + args.reruns)]
            if runs[0]["files_processed"] != size or any(r["files_skipped_known"] != size for r in runs[1:]):
                raise SystemExit(f"{size} images: the reruns did not find every image known: {runs}")
            new_files = files[size : 2 * size]
            if args.without_warmup:  # the same day's run without the warm-up, on a copy of the table
                shutil.copytree(root / "faces", root / "faces_no_warmup")
                shutil.copytree(root / "runs", root / "runs_no_warmup")
            link_images(new_files, root / "images")
            grown = lineup_embed(folder, root / "faces", root / "runs")
            if (grown["files_processed"], grown["files_skipped_known"]) != (len(new_files), size):
                raise SystemExit(f"{size} new images: not exactly the new ones were embedded: {grown}")
            grown_rate = len(new_files) / grown["beyond_session_start_s"]
            pool_rate = process_pool(new_files, len(os.sched_getaffinity(0)))
            if args.without_warmup:
                plain = lineup_embed(folder, root / "faces_no_warmup", root / "runs_no_warmup", "embed.warmup=false")
                plain_rate = len(new_files) / plain["beyond_session_start_s"]
                report.setdefault("without_warmup", {})[str(size)] = {
                    **plain,
                    "images_per_s_beyond_session_start": round(plain_rate, 1),
                    "ratio_vs_process_pool": round(plain_rate / pool_rate, 3),
                }
            report["sizes"][str(size)] = {
                "first_run": runs[0],
                "all_known_reruns": runs[1:],
                "max_beyond_session_start_s": max((r["beyond_session_start_s"] for r in runs[1:]), default=None),
                "new_images_run": {
                    **grown,
                    "images_per_s_beyond_session_start": round(grown_rate, 1),
                    "process_pool_images_per_s": round(pool_rate, 1),
                    "ratio_vs_process_pool": round(grown_rate / pool_rate, 3),
                },
            }
            ratio = report["sizes"][str(size)]["new_images_run"]["ratio_vs_process_pool"]
            print(json.dumps({size: ratio}), file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
