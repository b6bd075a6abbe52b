"""Model-pack benchmark: accuracy, detection rate and speed of the default pack against dlib's own
reference pipeline, measured on the same images in the same run. Prints one JSON line.

- LFW View 2, all ten folds: the default pack; dlib's reference pipeline (HOG detector upsampling once,
  5-point shape predictor, get_face_chip 150/0.25, the same ResNet: run through the converted ONNX file,
  which the parity test holds to dlib's own output within 1e-4; HOG misses get the mean HOG box, as for
  dlib's published LFW figure); and, when present, the InsightFace-style pack.
- Detection rate of the default pack on every LFW image and on utkface-dev.
- deepface-pairs: all 299 pairs scored (largest face of each photo), AUC; and how close our chips come to
  dlib's: median cosine between the embedding of our chip and of dlib's own chip of the same face.
- Speed: faces per CPU-second (process CPU time, one onnxruntime thread, dlib single-threaded) of the
  default pack and of the dlib reference pipeline with dlib's own network, same LFW images; and the
  default pack with its quality components measured (the default) against without, twice each,
  alternating (`quality_cost`: 1 - best on / best off).

Usage: .venv/bin/python -m bench.bench_packs [--speed-images 500] [--skip-insightface]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.common import data_root, default_pack_sources
from bench.reference import DlibReference
from jobs.audit.lfw import protocol_summary, read_lfw_pairs, run_lfw_audit
from jobs.audit.verification import roc_auc
from jobs.models.build import build_default_pack, build_insightface_pack
from jobs.models.pipeline import FacePipeline, PipelineSettings

log = logging.getLogger("bench_packs")


def rgb_of(path: Path) -> np.ndarray:
    return cv2.imread(str(path))[:, :, ::-1].copy()


def dlib_reference_lfw(reference: DlibReference, pipeline: FacePipeline, lfw: Path) -> dict:
    pairs = read_lfw_pairs(lfw / "pairs.txt")
    names = sorted({p.left for p in pairs} | {p.right for p in pairs})
    shapes, boxes = {}, []
    for name in names:
        rgb = rgb_of(lfw / "images" / name)
        shape = reference.shape(rgb)
        shapes[name] = shape
        if shape is not None:
            r = shape.rect
            boxes.append([r.left(), r.top(), r.right(), r.bottom()])
    mean_box = np.mean(boxes, axis=0).round().astype(int)
    embeddings, misses = {}, 0
    for name in names:
        rgb = rgb_of(lfw / "images" / name)
        shape = shapes[name]
        if shape is None:
            misses += 1
            rect = reference.dlib.rectangle(*[int(v) for v in mean_box])
            shape = reference.predictor(rgb, rect)
        embeddings[name] = pipeline.embed_chips(np.asarray(reference.chip(rgb, shape))[None])[0]
    summary = protocol_summary(embeddings, pairs)
    summary["hog_misses"] = misses
    return summary


def detection_rate(pipeline: FacePipeline, files: list[Path]) -> dict:
    found = 0
    for path in files:
        rgb = cv2.imread(str(path))
        if rgb is not None and len(pipeline.detect(rgb[:, :, ::-1].copy())):
            found += 1
    return {"images": len(files), "detected": found, "rate": round(found / len(files), 5)}


def largest_face(result):
    return max(result.faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))


def deepface(pipeline: FacePipeline, reference: DlibReference, folder: Path) -> dict:
    import csv

    rows = list(csv.DictReader((folder / "master.csv").open()))
    files = sorted({row["file_x"] for row in rows} | {row["file_y"] for row in rows})
    embeddings, closeness = {}, []
    for name in files:
        (result,) = pipeline.process_bytes([(folder / name).read_bytes()])
        embeddings[name] = largest_face(result).embedding if result.status == "ok" else None
        rgb = rgb_of(folder / name)
        shape = reference.shape(rgb)
        if shape is not None and embeddings[name] is not None:
            theirs = pipeline.embed_chips(np.asarray(reference.chip(rgb, shape))[None])[0]
            ours = max((f.embedding for f in result.faces), key=lambda e: float(e @ theirs))
            closeness.append(float(ours @ theirs))
    scored = [(row, embeddings[row["file_x"]], embeddings[row["file_y"]]) for row in rows]
    usable = [(row, a, b) for row, a, b in scored if a is not None and b is not None]
    scores = np.array([float(a @ b) for _, a, b in usable])
    genuine = np.array([row["Decision"] == "Yes" for row, _, _ in usable])
    return {
        "pairs": len(rows),
        "pairs_scored": len(usable),
        "auc": round(roc_auc(scores, genuine), 5),
        "chip_cosine_to_dlib_median": round(float(np.median(closeness)), 5),
        "chip_cosine_faces": len(closeness),
    }


def speed(pack, reference: DlibReference, files: list[Path]) -> dict:
    """Faces per CPU-second, both pipelines single-threaded on the same images, counted two ways:
    every face each detector finds is embedded and counted, or one face per image (ours: the best-scoring
    detection, `max_faces=1`; dlib: the most central HOG detection)."""
    blobs = [path.read_bytes() for path in files]
    report: dict = {"images": len(files)}
    for mode, max_faces in (("every_face", 20), ("one_face_per_image", 1)):
        faces = sum(
            len(r.faces) for r in FacePipeline(pack, PipelineSettings(max_faces=max_faces)).process_bytes(blobs)
        )
        ours = faces_per_cpu_s(pack, blobs, max_faces, True)
        theirs_faces, theirs = dlib_speed(reference, blobs, every_face=max_faces > 1)
        report[mode] = {
            "default_pack_faces": faces,
            "default_pack_quality_off_faces_per_cpu_s": round(faces_per_cpu_s(pack, blobs, max_faces, False), 2),
            "dlib_reference_faces": theirs_faces,
            "default_pack_faces_per_cpu_s": round(ours, 2),
            "dlib_reference_faces_per_cpu_s": round(theirs, 2),
            "ratio": round(ours / theirs, 2),
        }
        # quality on (the default) against off, alternating so the VM's drift falls on both alike
        on = [ours, faces_per_cpu_s(pack, blobs, max_faces, True)]
        off = [report[mode]["default_pack_quality_off_faces_per_cpu_s"], faces_per_cpu_s(pack, blobs, max_faces, False)]
        report[mode]["quality_on_faces_per_cpu_s"] = [round(v, 2) for v in on]
        report[mode]["quality_off_faces_per_cpu_s"] = [round(v, 2) for v in off]
        report[mode]["quality_cost"] = round(1 - max(on) / max(off), 4)
    return report


def faces_per_cpu_s(pack, blobs: list[bytes], max_faces: int, quality: bool) -> float:
    """The default pack's faces per CPU-second on `blobs`, single-threaded, quality measured or not."""
    pipeline = FacePipeline(pack, PipelineSettings(threads=1, max_faces=max_faces, quality=quality))
    started = time.process_time()
    faces = sum(len(r.faces) for i in range(0, len(blobs), 16) for r in pipeline.process_bytes(blobs[i : i + 16]))
    return faces / (time.process_time() - started)


def dlib_speed(reference: DlibReference, blobs: list[bytes], every_face: bool = True) -> tuple[int, float]:
    """(faces, faces per CPU-second) of dlib's reference pipeline, single-threaded: every HOG detection
    embedded, or only the most central one."""
    started, faces = time.process_time(), 0
    for blob in blobs:
        rgb = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
        shapes = reference.all_shapes(rgb) if every_face else [s for s in [reference.shape(rgb)] if s]
        for shape in shapes:
            reference.descriptor(reference.chip(rgb, shape))
            faces += 1
    return faces, faces / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-images", type=int, default=500)
    parser.add_argument("--skip-insightface", action="store_true")
    parser.add_argument("--only-speed", action="store_true", help="only the faces-per-CPU-second comparison")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = data_root()
    lfw = root / "lfw"
    pack = build_default_pack()
    pipeline = FacePipeline(pack, PipelineSettings(threads=1))
    reference = DlibReference(default_pack_sources())
    report: dict = {"bench": "packs", "model_id": pack.model_id}
    all_lfw = sorted((lfw / "images").glob("*/*.jpg"))
    sample = list(all_lfw)
    random.Random(0).shuffle(sample)
    if args.only_speed:
        report["speed"] = speed(pack, reference, sample[: args.speed_images])
        print(json.dumps(report))
        return
    phase = time.perf_counter()
    report["lfw_default_pack"] = run_lfw_audit(pack.path, lfw, None, "none", 1)
    report["lfw_dlib_reference"] = dlib_reference_lfw(reference, pipeline, lfw)
    log.info("LFW done in %.0f s", time.perf_counter() - phase)
    report["detection_lfw"] = detection_rate(pipeline, all_lfw)
    report["detection_utkface"] = detection_rate(pipeline, sorted((root / "utkface-dev").glob("*.jpg")))
    report["deepface"] = deepface(pipeline, reference, root / "deepface-pairs")
    report["speed"] = speed(pack, reference, sample[: args.speed_images])
    models = root.parent / "models" / "insightface-style"
    if not args.skip_insightface and models.is_dir():
        with tempfile.TemporaryDirectory() as scratch:
            other = build_insightface_pack(
                Path(scratch) / "pack", models / "det_scrfd_2.5g_kps.onnx", models / "rec_mobilefacenet_128.onnx"
            )
            report["lfw_insightface_style"] = run_lfw_audit(other.path, lfw, None, "none", 1)
    for key in [k for k in report if k.startswith("lfw_")]:
        report[key] = {k: v for k, v in report[key].items() if k not in ("detect_fail_images", "fold_thresholds")}
    report["measured_on"] = f"{platform.node()} {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, {root}"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
