"""Quantized-embedder benchmark: the default pack against an INT8 copy of it, same images, one run.
Prints one JSON line.

- The INT8 pack: the one `lineup setup` builds (`jobs/models/quantize.py`): the default pack's detector
  unchanged, its embedder statically quantized by onnxruntime (QOperator format, per-channel int8
  weights, uint8 activations) with the committed activation ranges. `--recalibrate` measures those
  ranges anew on the chips of deepface-pairs (and their mirror images: not an evaluation set) and
  rewrites `jobs/resources/int8-ranges.json`.
- Speed: faces per CPU-second of the whole pipeline (one onnxruntime thread) on 300 LFW images, beside
  dlib's own pipeline on the same images (every face each detector finds), each the median of three
  passes, and chips per CPU-second of the embedder alone.
- Accuracy: LFW View 2 10-fold accuracy (offer the INT8 pack only if it drops by at most 0.1 point),
  and on utkface-dev the same-race FMR per race at one global threshold giving FMR 1e-3 over all pairs,
  with its max/min (it must not get worse).

Usage: .venv/bin/python -m bench.bench_quantized [--work /tmp/lineup-bench-quantized] [--recalibrate]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import time
from pathlib import Path

import numpy as np

from bench.bench_fairness import all_pairs, embed_utkface, race_gap
from bench.bench_packs import dlib_speed
from bench.common import data_root, default_pack_sources
from bench.reference import DlibReference
from jobs.audit.lfw import run_lfw_audit
from jobs.models.build import build_default_pack
from jobs.models.decode import decode_image
from jobs.models.pack import Pack
from jobs.models.pipeline import FacePipeline, PipelineSettings
from jobs.models.quantize import RANGES_RESOURCE, build_int8_pack, measure_ranges

log = logging.getLogger("bench_quantized")


def calibration_tensors(pipeline: FacePipeline, images: list[Path]) -> list[np.ndarray]:
    """The embedder's input for every face found in `images`, and for its mirror image."""
    tensors = []
    for path in images:
        rgb = decode_image(path.read_bytes()).rgb
        if rgb is None:
            continue
        for marks in pipeline.detect(rgb).landmarks:
            chip = pipeline.cut_chip(rgb, marks)
            for pixels in (chip, chip[:, ::-1]):
                tensors.append(pipeline.embedder_input(pixels[None]))
    return tensors


def speed(pack: Pack, blobs: list[bytes], tensors: list[np.ndarray], passes: int) -> dict:
    """Faces per CPU-second: the median of `passes` passes over `blobs` (the first pass of a fresh
    pipeline ran ~10% slower than the next ones here: allocators and caches warming), and the embedder's
    chips per CPU-second."""
    pipeline = FacePipeline(pack, PipelineSettings(threads=1))
    pipeline.process_bytes(blobs[:8])  # sessions warmed before the clock
    rates = []
    for _ in range(passes):
        started, faces = time.process_time(), 0
        for start in range(0, len(blobs), 16):
            faces += sum(len(result.faces) for result in pipeline.process_bytes(blobs[start : start + 16]))
        rates.append(faces / (time.process_time() - started))
    faces_per_cpu_s = float(np.median(rates))
    chips = np.concatenate(tensors[:64])
    started = time.process_time()
    for _ in range(3):
        pipeline.embedder.run(None, {pack.embedder["input_name"]: chips})
    chips_per_cpu_s = 3 * len(chips) / (time.process_time() - started)
    return {
        "faces_per_cpu_s": round(faces_per_cpu_s, 1),
        "faces_per_cpu_s_passes": [round(rate, 1) for rate in rates],
        "embedder_chips_per_cpu_s": round(chips_per_cpu_s, 1),
    }


def utkface_gap(pack: Pack, folder: Path) -> dict:
    matrix, labels = embed_utkface(FacePipeline(pack, PipelineSettings(threads=1)), folder)
    a, b = all_pairs(len(matrix))
    gap = race_gap(np.einsum("ij,ij->i", matrix[a], matrix[b]), a, b, labels)
    return {
        "faces": len(matrix),
        "same_race_fmr_max_min": round(gap["max_min_ratio"], 2),
        "same_race_fmr": {race: result["fmr"] for race, result in gap["per_race"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lineup-bench-quantized"))
    parser.add_argument("--speed-images", type=int, default=300)
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the speed images (median)")
    parser.add_argument("--recalibrate", action="store_true", help="measure and commit new INT8 activation ranges")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    data = data_root()
    args.work.mkdir(parents=True, exist_ok=True)
    default = build_default_pack()
    tensors = calibration_tensors(
        FacePipeline(default, PipelineSettings(threads=1)), sorted((data / "deepface-pairs").glob("*.jpg"))
    )
    ranges = None
    if args.recalibrate:
        ranges = measure_ranges(default, tensors, "deepface-pairs chips and their mirror images")
        resource = Path(__file__).resolve().parents[1] / "jobs" / "resources" / RANGES_RESOURCE
        resource.write_text(json.dumps(ranges, indent=1, sort_keys=True) + "\n")
        log.info("wrote %s", resource)
    quantized = build_int8_pack(default, args.work / "pack-int8", ranges)
    images = sorted((data / "lfw" / "images").glob("*/*.jpg"))
    random.Random(1).shuffle(images)
    blobs = [path.read_bytes() for path in images[: args.speed_images]]
    report: dict = {"bench": "quantized", "int8_ranges": quantized.manifest["provenance"]["quantization"]["ranges"]}
    reference = DlibReference(default_pack_sources())
    dlib_runs = [dlib_speed(reference, blobs) for _ in range(args.passes)]
    dlib_rate = float(np.median([rate for _, rate in dlib_runs]))
    report["dlib_reference"] = {
        "faces": dlib_runs[0][0],
        "faces_per_cpu_s": round(dlib_rate, 2),
        "faces_per_cpu_s_passes": [round(rate, 2) for _, rate in dlib_runs],
    }
    for label, pack in (("fp32", default), ("int8", quantized)):
        lfw = run_lfw_audit(pack.path, data / "lfw", None, "none", 1)
        report[label] = {
            "model_id": pack.model_id,
            **speed(pack, blobs, tensors, args.passes),
            "lfw_accuracy": lfw["accuracy_mean"],
            "lfw_detect_fail": lfw["detect_fail"],
            "utkface_dev": utkface_gap(pack, data / "utkface-dev"),
        }
    for label in ("fp32", "int8"):
        report[label]["x_dlib_reference"] = round(report[label]["faces_per_cpu_s"] / dlib_rate, 2)
    report["int8_vs_fp32"] = {
        "faces_per_cpu_s_ratio": round(report["int8"]["faces_per_cpu_s"] / report["fp32"]["faces_per_cpu_s"], 3),
        "lfw_accuracy_points": round(100 * (report["int8"]["lfw_accuracy"] - report["fp32"]["lfw_accuracy"]), 3),
        "offer": report["int8"]["lfw_accuracy"] >= report["fp32"]["lfw_accuracy"] - 0.001
        and report["int8"]["utkface_dev"]["same_race_fmr_max_min"]
        <= report["fp32"]["utkface_dev"]["same_race_fmr_max_min"],
    }
    cores = len(os.sched_getaffinity(0))
    report["measured_on"] = f"{platform.node()} {platform.machine()}, {cores} CPUs, load {os.getloadavg()[0]:.2f}"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
