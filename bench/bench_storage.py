"""Object-storage benchmark against a local S3-compatible server on 127.0.0.1. Prints one JSON line.

The server is `.tools/s3server` (gofakes3, built by `make install`; ~0.5 ms of CPU per request) where it
is built, else moto (`--server moto`; ~7 ms of CPU per GET, taken from the 2 cores the job runs on, so
with moto the ratio measures moto as much as the job).

- Embed from S3 vs local disk: the same LFW images embedded by the job from a folder on local disk and
  from the same folder uploaded to the local S3 endpoint (faces tables local in both, so only the input
  differs), in one run and one SparkSession, alternating order; ratio = S3 rate / local rate.
- Planning at scale: `list_inputs` over a prefix of N small objects (default 100,000): wall time and
  the driver's peak RSS while planning (measured in a fresh process, so nothing else is in it).

Usage: .venv/bin/python -m bench.bench_storage [--images 2000] [--objects 100000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_embed import embed, link_images
from bench.common import data_root
from jobs.common.config import load_config
from jobs.common.spark import get_spark
from jobs.embed.config import EmbedConfig
from tests.fixtures.s3 import free_port, moto_server, s3_env, serve_on_loopback

log = logging.getLogger("bench_storage")

_PLAN_SCRIPT = """
import json, resource, sys, time
from jobs.faces.config import InputSettings
from jobs.faces.plan import list_inputs
started = time.perf_counter()
refs = list_inputs(InputSettings(kind="dir", path=sys.argv[1], glob="*.jpg"))
print(json.dumps({"refs": len(refs), "plan_s": round(time.perf_counter() - started, 1),
                  "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


GO_SERVER = Path(__file__).resolve().parents[1] / ".tools" / "s3server"


def go_s3_server():  # -> context manager yielding the endpoint URL
    port = free_port()
    return serve_on_loopback([str(GO_SERVER), "-addr", f"127.0.0.1:{port}"], port)


def raw_listing_s(prefix_bucket: str, prefix: str) -> float:
    """The server's own listing time (boto3's paginator, no Lineup code): the floor under planning."""
    import boto3

    started = time.perf_counter()
    for _ in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=prefix_bucket, Prefix=prefix):
        pass
    return round(time.perf_counter() - started, 1)


def upload(fs, local: Path, remote_key: str) -> None:
    fs.put(str(local), remote_key, recursive=True)


def fill_prefix(fs, bucket: str, count: int) -> None:
    """`count` small objects under bucket/many/, written concurrently by s3fs (batched PUTs)."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-objects-"))
    try:
        batch = 5000
        for start in range(0, count, batch):
            folder = scratch / f"b{start}"
            for number in range(start, min(start + batch, count)):
                sub = folder / f"p{number // 1000:04d}"
                sub.mkdir(parents=True, exist_ok=True)
                (sub / f"{number:07d}.jpg").write_bytes(b"\xff\xd8" + number.to_bytes(8, "big"))
            fs.put(str(folder) + "/", f"{bucket}/many/", recursive=True)
            shutil.rmtree(folder)
            log.info("uploaded %d/%d objects", min(start + batch, count), count)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--server", choices=["go", "moto"], default="go" if GO_SERVER.is_file() else "moto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    cores = len(os.sched_getaffinity(0))
    files = sorted((data_root() / "lfw" / "images").glob("*/*.jpg"))
    random.Random(0).shuffle(files)
    report: dict = {"bench": "storage", "images": args.images, "objects": args.objects, "server": args.server}
    scratch = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        with go_s3_server() if args.server == "go" else moto_server() as endpoint:
            os.environ.update(s3_env(endpoint))
            import fsspec

            fs = fsspec.filesystem("s3")
            fs.mkdir("bench")
            folder = link_images(files[: args.images], scratch / "images")
            upload(fs, folder, "bench/images")
            spark = get_spark(
                load_config(EmbedConfig, None, ["embed.input.path=.", f"spark.master=local[{cores}]"]).spark
            )
            rates: dict[str, list[float]] = {"local": [], "s3": []}
            for round_number in range(args.rounds):
                order = [("local", str(folder)), ("s3", "s3a://bench/images")]
                for name, source in order if round_number % 2 == 0 else order[::-1]:
                    table = scratch / f"faces_{name}_{round_number}"
                    rates[name].append(embed(spark, source, table, cores)["images_per_s"])
            best = {name: max(values) for name, values in rates.items()}
            report["embed"] = {
                "rounds_images_per_s": rates,
                "best_local_images_per_s": best["local"],
                "best_s3_images_per_s": best["s3"],
                "ratio_s3_vs_local": round(best["s3"] / best["local"], 3),
            }
            spark.stop()
            started = time.perf_counter()
            fill_prefix(fs, "bench", args.objects)
            report["planning"] = {
                "upload_s": round(time.perf_counter() - started, 1),
                "server_listing_s": raw_listing_s("bench", "many/"),
            }
            result = subprocess.run(
                [sys.executable, "-c", _PLAN_SCRIPT, "s3a://bench/many"],
                capture_output=True,
                text=True,
                env=dict(os.environ),
                check=True,
            )
            report["planning"].update(json.loads(result.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["load_average"] = [round(v, 2) for v in os.getloadavg()]
    report["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["measured_on"] = (
        f"{platform.node()} {platform.machine()}, {cores} CPUs, local[{cores}], {args.server} S3 server on 127.0.0.1, "
        f"LFW images from {data_root()}"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
