"""`lineup audit lfw`: the LFW View 2 protocol for a model pack, as one JSON line.

The 10 folds of `pairs.txt` (300 genuine + 300 impostor pairs each): for each fold the threshold is
chosen on the other nine and accuracy measured on it; mean and sample std (ddof=1) over folds. AUC and
TMR (1 - FNMR) at FMR 1e-3 are over all pairs. An image without a detected face makes its pairs count as errors
(`fallback: none`), unless `--fallback centre` is given: then the face is taken from the image centre
using the pack's template scaled to LFW's typical face box, and the output says so.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.audit.verification import k_fold_accuracy, roc_auc, tmr_at_fmr, worst_case_scores
from jobs.common.delta import pinned_version
from jobs.common.errors import UserError
from jobs.models.decode import decode_image
from jobs.models.pack import load_pack
from jobs.models.pipeline import FacePipeline, PipelineSettings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    fold: int
    left: str  # relative image path, e.g. "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"
    right: str
    genuine: bool


def image_name(person: str, number: str) -> str:
    return f"{person}/{person}_{int(number):04d}.jpg"


def read_lfw_pairs(pairs_path: Path) -> list[Pair]:
    """Parse LFW's `pairs.txt` (first line: folds and pairs per class per fold)."""
    if not pairs_path.is_file():
        raise UserError(f"{pairs_path} not found: --lfw-dir must hold LFW's pairs.txt and images/")
    lines = pairs_path.read_text().split("\n")
    folds, per_class = (int(value) for value in lines[0].split())
    rows = [line.split() for line in lines[1:] if line.strip()]
    if len(rows) != folds * per_class * 2:
        raise UserError(f"{pairs_path}: expected {folds * per_class * 2} pairs, found {len(rows)}")
    pairs = []
    for index, row in enumerate(rows):
        fold = index // (2 * per_class)
        if len(row) == 3:
            pairs.append(Pair(fold, image_name(row[0], row[1]), image_name(row[0], row[2]), True))
        elif len(row) == 4:
            pairs.append(Pair(fold, image_name(row[0], row[1]), image_name(row[2], row[3]), False))
        else:
            raise UserError(f"{pairs_path}: line {index + 2} is not a pair: {' '.join(row)}")
    return pairs


def central_face(faces: list, width: int, height: int) -> Any:
    """The face LFW is about: the one whose box centre is nearest the image centre."""
    centre = np.array([width / 2, height / 2])
    distances = [np.linalg.norm((face.bbox[:2] + face.bbox[2:]) / 2 - centre) for face in faces]
    return faces[int(np.argmin(distances))]


def score_pairs(embeddings: dict[str, np.ndarray | None], pairs: list[Pair]) -> tuple[np.ndarray, ...]:
    """Cosine scores, genuine flags, failed flags (either image without a face) and fold numbers."""
    scores = np.zeros(len(pairs))
    failed = np.zeros(len(pairs), dtype=bool)
    for index, pair in enumerate(pairs):
        left, right = embeddings.get(pair.left), embeddings.get(pair.right)
        if left is None or right is None:
            failed[index] = True
        else:
            scores[index] = float(np.dot(left, right))
    genuine = np.array([pair.genuine for pair in pairs])
    folds = np.array([pair.fold for pair in pairs])
    return scores, genuine, failed, folds


def protocol_summary(embeddings: dict[str, np.ndarray | None], pairs: list[Pair]) -> dict[str, Any]:
    """The View 2 numbers for embeddings keyed by relative image path (None: no face)."""
    scores, genuine, failed, folds = score_pairs(embeddings, pairs)
    fold_results = k_fold_accuracy(scores, genuine, failed, folds)
    accuracies = np.array([result.accuracy for result in fold_results])
    worst = worst_case_scores(scores, genuine, failed)
    tmr, threshold = tmr_at_fmr(worst, genuine, 1e-3)
    return {
        "accuracy_mean": round(float(accuracies.mean()), 5),
        "accuracy_std": round(float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0, 5),
        "fold_accuracies": [round(float(a), 4) for a in accuracies],
        "fold_thresholds": [round(result.threshold, 4) for result in fold_results],
        "auc": round(roc_auc(worst, genuine), 5),
        "tmr_at_fmr_1e-3": round(tmr, 5),
        "threshold_at_fmr_1e-3": round(threshold, 5),
        "pairs": len(pairs),
        "pairs_with_detect_fail": int(failed.sum()),
    }


def embed_lfw_images(
    pipeline: FacePipeline, images_dir: Path, names: list[str], fallback: str
) -> tuple[dict, dict[str, Any]]:
    """Embed each named image with the pipeline; returns embeddings (None for a miss) and counts."""
    embeddings: dict[str, np.ndarray | None] = {}
    failures, fallbacks, faces = [], 0, 0
    started, cpu_started = time.perf_counter(), time.process_time()
    batch = 32
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        blobs = [(images_dir / name).read_bytes() for name in chunk]
        for name, result in zip(chunk, pipeline.process_bytes(blobs)):
            if result.status == "ok":
                faces += len(result.faces)
                assert result.width is not None and result.height is not None  # an ok result has its size
                embeddings[name] = central_face(result.faces, result.width, result.height).embedding
            elif fallback == "centre":
                embeddings[name] = _centre_fallback(pipeline, images_dir / name)
                fallbacks += 1
                failures.append(name)
            else:
                embeddings[name] = None
                failures.append(name)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    counts = {
        "images": len(names),
        "detect_fail": len(failures),
        "detect_fail_images": failures[:50],
        "fallback": fallback,
        "fallback_used": fallbacks,
        "images_per_s": round(len(names) / elapsed, 2),
        "faces_per_cpu_s": round(len(names) / max(cpu, 1e-9), 2),
    }
    return embeddings, counts


def _centre_fallback(pipeline: FacePipeline, path: Path) -> np.ndarray | None:
    """Documented fallback: place the template as if the face filled the central 60% of the image."""

    decoded = decode_image(path.read_bytes())
    if decoded.rgb is None:
        return None
    height, width = decoded.rgb.shape[:2]
    template = pipeline.template
    size = pipeline.chip_size
    scale = 0.6 * min(width, height) / size * 1.5
    landmarks = (template - size / 2) * scale + np.array([width / 2, height / 2])
    return pipeline.embed_chips(pipeline.cut_chip(decoded.rgb, landmarks)[None])[0]


def run_lfw_audit(
    pack_dir: Path, lfw_dir: Path, folds: list[int] | None, fallback: str, threads: int
) -> dict[str, Any]:
    pack = load_pack(pack_dir)
    pairs = read_lfw_pairs(lfw_dir / "pairs.txt")
    if folds:
        pairs = [pair for pair in pairs if pair.fold + 1 in folds]
    names = sorted({pair.left for pair in pairs} | {pair.right for pair in pairs})
    missing = [name for name in names if not (lfw_dir / "images" / name).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} images named by pairs.txt are missing under {lfw_dir / 'images'} (first: {missing[0]})"
        )
    pipeline = FacePipeline(pack, PipelineSettings(threads=threads))
    embeddings, counts = embed_lfw_images(pipeline, lfw_dir / "images", names, fallback)
    summary = {"job": "audit-lfw", "status": "ok", "model_id": pack.model_id, **protocol_summary(embeddings, pairs)}
    summary.update(counts)
    summary["folds_used"] = sorted({pair.fold + 1 for pair in pairs})
    summary["measured_on"] = (
        f"LFW View 2 pairs.txt from {lfw_dir}, {len(names)} images; {platform.machine()} with "
        f"{len(os.sched_getaffinity(0))} CPUs, {threads} onnxruntime thread(s)"
    )
    return summary


def embeddings_from_faces_table(spark: SparkSession, table_path: str, model_id: str | None) -> tuple[dict, str, int]:
    """Central-face embeddings keyed by `Name/Name_NNNN.jpg`, read from a faces table written by `lineup embed`.

    Returns the embeddings, the model_id they come from and the table version read.
    """
    from pyspark.sql import functions as F

    version = pinned_version(spark, table_path, None, "--faces-table", "write it with `lineup embed`")
    frame = spark.read.format("delta").option("versionAsOf", version).load(table_path).where(F.col("status") == "ok")
    models = [row.model_id for row in frame.select("model_id").distinct().collect()]
    if model_id is None:
        if len(models) != 1:
            raise UserError(f"--faces-table {table_path} holds models {models}: choose one with --model-id")
        model_id = models[0]
    elif model_id not in models:
        raise UserError(f"--faces-table {table_path} has no faces for model {model_id} (it has {models})")
    rows = (
        frame.where(F.col("model_id") == model_id)
        .select("source_path", "bbox", "embedding", "image_width", "image_height")
        .collect()
    )
    by_image: dict[str, list] = {}
    for row in rows:
        name = "/".join(row.source_path.replace("!", "/").split("/")[-2:])
        by_image.setdefault(name, []).append(row)
    embeddings = {}
    for name, faces in by_image.items():
        centre = np.array([faces[0].image_width / 2, faces[0].image_height / 2])
        best = min(
            faces,
            key=lambda r: np.hypot((r.bbox.x1 + r.bbox.x2) / 2 - centre[0], (r.bbox.y1 + r.bbox.y2) / 2 - centre[1]),
        )
        embeddings[name] = np.asarray(best.embedding, dtype=np.float32)
    return embeddings, model_id, version


def run_lfw_audit_from_table(
    spark: SparkSession, table_path: str, lfw_dir: Path, model_id: str | None, folds: list[int] | None
) -> dict[str, Any]:
    """The View 2 numbers from embeddings already in a faces table (no model is run)."""
    pairs = read_lfw_pairs(lfw_dir / "pairs.txt")
    if folds:
        pairs = [pair for pair in pairs if pair.fold + 1 in folds]
    embeddings, model_id, version = embeddings_from_faces_table(spark, table_path, model_id)
    names = sorted({pair.left for pair in pairs} | {pair.right for pair in pairs})
    missing = [name for name in names if name not in embeddings]
    summary = {"job": "audit-lfw", "status": "ok", "model_id": model_id, **protocol_summary(embeddings, pairs)}
    summary.update(
        images=len(names),
        detect_fail=len(missing),
        detect_fail_images=missing[:50],
        fallback="none",
        folds_used=sorted({pair.fold + 1 for pair in pairs}),
        measured_on=f"LFW View 2 pairs.txt from {lfw_dir}; embeddings from faces table {table_path} version {version}",
    )
    return summary
