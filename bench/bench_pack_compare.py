"""The three packs `lineup setup` builds, side by side in one run: default, INT8, and accuracy-first
(`flip_average`: each chip's embedding averaged with its mirror image's). Prints one JSON line.

Per pack, on the same images:
- LFW View 2: 10-fold accuracy (the central face of each image), and FNMR of the 3,000 genuine pairs at
  the thresholds giving FMR 1e-3 and 1e-4 over every different-person pair of View 2's images (~29.6M).
- The demo's searches (`lineup demo`'s plan, every face of the gallery photographs, exact search, k=10):
  rank-1 hit rate, FNIR at FPIR 0.01 and 0.1 (thresholds from the non-mated searches).
- utkface-dev: one global threshold at FMR 1e-3 over all pairs (raw scores), the same-race FMR per race
  and its max/min.
- Faces per CPU-second: one thread, 300 LFW images, process CPU time.

Faces come from bench_quality's per-pack cache (two processes). Usage:
.venv/bin/python -m bench.bench_pack_compare
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import time
from pathlib import Path

import numpy as np

from bench.bench_quality import Lfw, faces_of_images, impostor_scores, one_to_n, threshold_at_fmr
from bench.common import data_root
from jobs.audit.lfw import protocol_summary
from jobs.common.paths import accurate_pack_dir, default_pack_dir
from jobs.models.pack import load_pack
from jobs.models.pipeline import FacePipeline, PipelineSettings

log = logging.getLogger("bench_pack_compare")
RACES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}


def view2(data: Lfw) -> dict:
    embeddings = {name: data.vectors_arr[i] for i, name in enumerate(data.names)}
    accuracy = protocol_summary(embeddings, data.pairs)
    images = sorted({n for p in data.pairs for n in (p.left, p.right)} & set(data.position))
    members = np.array([data.position[n] for n in images])
    impostor = impostor_scores(data.vectors_arr[members], data.people_arr[members])
    genuine = np.array(
        [
            float(data.vectors_arr[data.position[p.left]] @ data.vectors_arr[data.position[p.right]])
            for p in data.pairs
            if p.genuine and p.left in data.position and p.right in data.position
        ]
    )
    out = {"accuracy_mean": accuracy["accuracy_mean"], "impostor_pairs": len(impostor)}
    for fmr in (1e-3, 1e-4):
        out[f"fnmr_at_fmr_{fmr:g}"] = round(float((genuine < threshold_at_fmr(impostor, fmr)).mean()), 5)
    return out


def demo_searches(data: Lfw, lfw: Path) -> dict:
    out = {}
    for fpir in (0.01, 0.1):
        result = one_to_n(data, lfw, {}, fpir=fpir)
        out["rank_1_hit_rate"] = result["rank_1_hit_rate"]
        out[f"fnir_at_fpir_{fpir:g}"] = result["random"]["error_at_0"]  # nothing discarded: the FNIR itself
    return out


def race_gap(root: Path, pack_dir: Path) -> dict:
    found = faces_of_images(sorted((root / "utkface-dev").glob("*.jpg")), "utkface", pack_dir)
    vectors, races = [], []
    for item in found:
        if item["faces"]:
            vectors.append(max(item["faces"], key=lambda f: f["components"].det_score)["embedding"])
            races.append(Path(item["path"]).name.split("_")[2])
    v, r = np.stack(vectors), np.array(races)
    a, b = np.triu_indices(len(v), k=1)
    scores = np.einsum("ij,ij->i", v[a], v[b])
    threshold = threshold_at_fmr(scores, 1e-3)
    per_race = {RACES[c]: float((scores[(r[a] == c) & (r[b] == c)] >= threshold).mean()) for c in RACES}
    low = min(per_race.values())
    return {"same_race_fmr": per_race, "max_min_ratio": round(max(per_race.values()) / low, 2) if low else math.inf}


def speed(pack_dir: Path, files: list[Path]) -> float:
    pipeline = FacePipeline(load_pack(pack_dir), PipelineSettings(threads=1))
    blobs = [p.read_bytes() for p in files]
    pipeline.process_bytes(blobs[:16])
    started = time.process_time()
    faces = sum(len(r.faces) for i in range(0, len(blobs), 16) for r in pipeline.process_bytes(blobs[i : i + 16]))
    return faces / (time.process_time() - started)


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    root = data_root()
    packs = {
        "default": default_pack_dir(),
        "int8": default_pack_dir().parent / "default-int8",
        "accurate_flip": accurate_pack_dir(),
    }
    sample = sorted((root / "lfw" / "images").glob("*/*.jpg"))
    random.Random(0).shuffle(sample)
    report: dict = {"bench": "pack_compare", "packs": {}}
    for name, pack_dir in packs.items():
        if not (pack_dir / "pack.json").is_file():
            raise SystemExit(f"{pack_dir} has no pack: run `lineup setup`")
        data = Lfw(root / "lfw", pack_dir)
        report["packs"][name] = {
            "model_id": load_pack(pack_dir).model_id,
            "lfw_view2": view2(data),
            "demo_searches": demo_searches(data, root / "lfw"),
            "utkface_dev": race_gap(root, pack_dir),
            "faces_per_cpu_s": round(speed(pack_dir, sample[:300]), 1),
        }
        log.info("%s: %s", name, report["packs"][name])
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    report["measured_on"] = f"{platform.node()} {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, {root}"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
