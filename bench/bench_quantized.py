"""Quantized-embedder benchmark: the default pack against an INT8 copy of it, same images, one run.
Prints one JSON line.

- The INT8 pack: the default pack's detector unchanged; its embedder statically quantized by
  onnxruntime (QOperator format, per-channel int8 weights, uint8 activations), with activation ranges
  calibrated on the chips of deepface-pairs (and their mirror images): not an evaluation set. It is
  written under --work and is not a pack `lineup setup` builds.
- Speed: faces per CPU-second of the whole pipeline (one onnxruntime thread) on 300 LFW images, and
  chips per CPU-second of the embedder alone.
- Accuracy: LFW View 2 10-fold accuracy (offer the INT8 pack only if it drops by at most 0.1 point),
  and on utkface-dev the same-race FMR per race at one global threshold giving FMR 1e-3 over all pairs,
  with its max/min (it must not get worse).

Usage: .venv/bin/python -m bench.bench_quantized [--work /tmp/lineup-bench-quantized]
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
from bench.common import data_root
from jobs.audit.lfw import run_lfw_audit
from jobs.models.build import build_default_pack
from jobs.models.decode import decode_image
from jobs.models.pack import PACK_FILE, Pack, write_pack
from jobs.models.pipeline import FacePipeline, PipelineSettings

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
                scaled = (pixels[None].astype(np.float32) - pipeline._embed_mean) * pipeline._embed_scale
                tensors.append(np.ascontiguousarray(scaled.transpose(0, 3, 1, 2)))
    return tensors


def int8_pack(default: Pack, tensors: list[np.ndarray], work: Path) -> Pack:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = default.embedder["input_name"]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(tensors)

        def get_next(self) -> dict | None:
            tensor = next(self.remaining, None)
            return None if tensor is None else {input_name: tensor}

    prepared, quantized = work / "embedder.prepared.onnx", work / "embedder.int8.onnx"
    quant_pre_process(str(default.file_path("embedder")), str(prepared))
    quantize_static(
        str(prepared),
        str(quantized),
        Reader(),
        quant_format=QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    manifest = json.loads((default.path / PACK_FILE).read_text())
    manifest = {k: v for k, v in manifest.items() if k not in ("model_id", "format")}
    manifest["name"] += "-int8"
    manifest["provenance"]["quantization"] = (
        "onnxruntime static QOperator, per-channel int8 weights, uint8 activations, MinMax ranges from "
        f"{len(tensors)} deepface-pairs chips"
    )
    files = {"detector": default.file_path("detector").read_bytes(), "embedder": quantized.read_bytes()}
    return write_pack(work / "pack-int8", manifest, files)


def speed(pack: Pack, blobs: list[bytes], tensors: list[np.ndarray]) -> dict:
    pipeline = FacePipeline(pack, PipelineSettings(threads=1))
    pipeline.process_bytes(blobs[:8])  # sessions warmed before the clock
    started, faces = time.process_time(), 0
    for start in range(0, len(blobs), 16):
        faces += sum(len(result.faces) for result in pipeline.process_bytes(blobs[start : start + 16]))
    faces_per_cpu_s = faces / (time.process_time() - started)
    chips = np.concatenate(tensors[:64])
    started = time.process_time()
    for _ in range(3):
        pipeline.embedder.run(None, {pack.embedder["input_name"]: chips})
    chips_per_cpu_s = 3 * len(chips) / (time.process_time() - started)
    return {"faces_per_cpu_s": round(faces_per_cpu_s, 1), "embedder_chips_per_cpu_s": round(chips_per_cpu_s, 1)}


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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    data = data_root()
    args.work.mkdir(parents=True, exist_ok=True)
    default = build_default_pack()
    tensors = calibration_tensors(
        FacePipeline(default, PipelineSettings(threads=1)), sorted((data / "deepface-pairs").glob("*.jpg"))
    )
    quantized = int8_pack(default, tensors, args.work)
    images = sorted((data / "lfw" / "images").glob("*/*.jpg"))
    random.Random(1).shuffle(images)
    blobs = [path.read_bytes() for path in images[: args.speed_images]]
    report: dict = {"bench": "quantized", "calibration_chips": len(tensors)}
    for label, pack in (("fp32", default), ("int8", quantized)):
        lfw = run_lfw_audit(pack.path, data / "lfw", None, "none", 1)
        report[label] = {
            "model_id": pack.model_id,
            **speed(pack, blobs, tensors),
            "lfw_accuracy": lfw["accuracy_mean"],
            "lfw_detect_fail": lfw["detect_fail"],
            "utkface_dev": utkface_gap(pack, data / "utkface-dev"),
        }
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
