"""Search by person: identity templates against face-by-face search, on LFW, in one run. Prints one JSON
line; exits 1 when templates are worse than faces at rank-1 or at either FNIR.

- Gallery: every LFW person with three or more photographs, 2-5 of them enrolled (all but one, at most
  five); probes: one more photograph of each (mated) and the `lineup demo` plan's non-mated probes
  (people with one photograph, none enrolled). The central face of each photograph (LFW's convention),
  embedded by the default pack (bench_quality's cache).
- Faces: exact search over every enrolled face; a subject's score is its best face's. Templates: one per
  person, `jobs.shards.templates.mean_template` of the person's faces weighted by their unified quality
  (the index job's own code), exact search.
- Reported for both: rank-1 hit rate of the mated probes; FNIR at FPIR 0.01 and 0.1, each threshold set
  on that method's own non-mated searches.

Usage: .venv/bin/python -m bench.bench_templates
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

import numpy as np

from bench.bench_quality import Lfw
from bench.common import data_root
from jobs.demo.plan import plan_demo
from jobs.models.build import build_default_pack
from jobs.models.quality_model import assess
from jobs.shards.templates import mean_template

log = logging.getLogger("bench_templates")


def split(data: Lfw, lfw: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gallery face positions, mated probe positions, non-mated probe positions)."""
    by_person: dict[str, list[int]] = {}
    for position, person in enumerate(data.people):
        by_person.setdefault(person, []).append(position)
    gallery, mated = [], []
    for person in sorted(by_person):
        photos = sorted(by_person[person], key=lambda p: data.names[p])
        if len(photos) >= 3:
            enrolled = photos[: min(len(photos) - 1, 5)]
            gallery += enrolled
            mated.append(photos[len(enrolled)])
    plan = plan_demo(lfw / "images")
    non_mated_names = [f"{p.parent.name}/{p.name}" for p in plan.probes[plan.counts["mated_probes"] :]]
    non_mated = [data.position[n] for n in non_mated_names if n in data.position]
    return np.array(gallery), np.array(mated), np.array(non_mated)


def subject_scores_by_faces(data: Lfw, gallery: np.ndarray, probes: np.ndarray, subjects: list[str]) -> np.ndarray:
    """(probes x subjects): each subject's best face score."""
    sims = data.vectors_arr[probes] @ data.vectors_arr[gallery].T
    column = {s: i for i, s in enumerate(subjects)}
    owner = np.array([column[data.people[g]] for g in gallery])
    out = np.full((len(probes), len(subjects)), -2.0, np.float32)
    for s in range(len(subjects)):
        out[:, s] = sims[:, owner == s].max(axis=1)
    return out


def rates(scores_mated: np.ndarray, truth: np.ndarray, scores_non_mated: np.ndarray) -> dict:
    rank_1 = float((scores_mated.argmax(axis=1) == truth).mean())
    true_scores = scores_mated[np.arange(len(truth)), truth]
    best_non_mated = np.sort(scores_non_mated.max(axis=1))[::-1]
    out = {"rank_1_hit_rate": round(rank_1, 4)}
    for fpir in (0.01, 0.1):
        threshold = float(np.nextafter(best_non_mated[int(np.floor(fpir * len(best_non_mated)))], np.inf))
        # threshold mode: a mated search misses when the person's own score is under the threshold
        out[f"fnir_at_fpir_{fpir}"] = round(float((true_scores < threshold).mean()), 4)
        out[f"threshold_at_fpir_{fpir}"] = round(threshold, 5)
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    root = data_root()
    data = Lfw(root / "lfw")
    pack = build_default_pack()
    gallery, mated, non_mated = split(data, root / "lfw")
    subjects = sorted({data.people[g] for g in gallery})
    column = {s: i for i, s in enumerate(subjects)}
    truth = np.array([column[data.people[p]] for p in mated])
    faces_mated = subject_scores_by_faces(data, gallery, mated, subjects)
    faces_non_mated = subject_scores_by_faces(data, gallery, non_mated, subjects)
    quality = np.array([assess(data.components[g], pack.model_id)[0] for g in gallery])
    templates = np.stack(
        [
            mean_template(data.vectors_arr[gallery[mask]], quality[mask])
            for mask in (np.array([data.people[g] == s for g in gallery]) for s in subjects)
        ]
    )
    faces = rates(faces_mated, truth, faces_non_mated)
    by_templates = rates(data.vectors_arr[mated] @ templates.T, truth, data.vectors_arr[non_mated] @ templates.T)
    not_worse = (
        by_templates["rank_1_hit_rate"] >= faces["rank_1_hit_rate"]
        and by_templates["fnir_at_fpir_0.01"] <= faces["fnir_at_fpir_0.01"]
        and by_templates["fnir_at_fpir_0.1"] <= faces["fnir_at_fpir_0.1"]
    )
    report = {
        "bench": "templates",
        "data": f"LFW: {len(subjects)} people with 3+ photographs, {len(gallery)} gallery faces (2-5 each), "
        f"{len(mated)} mated probes, {len(non_mated)} non-mated probes (lineup demo's), default pack {pack.model_id}",
        "faces": faces,
        "templates": by_templates,
        "better_by": {
            "rank_1_points": round(100 * (by_templates["rank_1_hit_rate"] - faces["rank_1_hit_rate"]), 2),
            "fnir_at_fpir_0.01_points": round(
                100 * (faces["fnir_at_fpir_0.01"] - by_templates["fnir_at_fpir_0.01"]), 2
            ),
            "fnir_at_fpir_0.1_points": round(100 * (faces["fnir_at_fpir_0.1"] - by_templates["fnir_at_fpir_0.1"]), 2),
        },
        "templates_not_worse": not_worse,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "measured_on": f"{platform.node()} {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
    }
    print(json.dumps(report))
    raise SystemExit(0 if not_worse else 1)


if __name__ == "__main__":
    main()
