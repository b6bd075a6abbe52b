"""Fair score normalization (FSN) benchmark: demographic gap and accuracy, raw vs normalized, one run.

- utkface-dev (2,000 adults, every image a different person, 200 per race x gender), split by image into
  two seeded halves: FSN learnt on one half (no label read), measured on the other, and the reverse. On
  the measuring half: the global threshold at FMR 1e-3 over all its pairs (raw, and separately on
  normalized scores: the same overall FMR), then the same-race FMR per race and its max/min ratio.
- Matched impostors (`calibrate --matched-impostors race,gender`) against the ordinary calibration on
  utkface-dev at FMR 1e-3: same-race FMR per race at each threshold, and the FNMR each gives on LFW View 2.
- LFW View 2 with FSN learnt on all of utkface-dev (another data set): 10-fold accuracy, TAR at FMR 1e-3,
  and FNMR per group at the threshold giving FMR 1e-3. This LFW copy has no demographic labels, so the
  groups there are FSN's own k-means clusters (the probe face's cluster), stated as such.

Embeddings come from the default pack (one onnxruntime thread) and are cached under --work.

Usage: .venv/bin/python -m bench.bench_fairness [--clusters 20] [--work /tmp/lineup-bench-fairness]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np

from bench.common import data_root
from jobs.audit.lfw import embed_lfw_images, protocol_summary, read_lfw_pairs, score_pairs
from jobs.audit.metrics import fmr_fnmr, ratio_max_min
from jobs.common.fmr import threshold_at_fmr, worst_group_threshold
from jobs.common.normalization import learn_fsn

log = logging.getLogger("bench_fairness")
RACES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}
TARGET_FMR = 1e-3


def pipeline():
    from jobs.common.paths import default_pack_dir
    from jobs.models.pack import load_pack
    from jobs.models.pipeline import FacePipeline, PipelineSettings

    return FacePipeline(load_pack(default_pack_dir()), PipelineSettings(threads=1))


def utkface_embeddings(folder: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, race per face) of the most confident face of every utkface-dev image with a face."""
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        return saved["vectors"], saved["races"]
    vectors, races = embed_utkface(pipeline(), folder)
    np.savez(cache, vectors=vectors, races=races)
    return vectors, races


def utkface_genders(folder: Path) -> np.ndarray:
    """Gender per face, in `embed_utkface`'s order (the images with a face: the default pack finds one in
    every utkface-dev image, which `matched_calibration` checks by the counts)."""
    return np.asarray([path.name.split("_")[1] for path in sorted(folder.glob("*.jpg"))])


def embed_utkface(faces, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, race per face) of the most confident face of every image in `folder` with a face, by
    the given pipeline (UTKFace names: age_gender_race_date.jpg)."""
    files = sorted(folder.glob("*.jpg"))
    vectors, races = [], []
    for start in range(0, len(files), 32):
        chunk = files[start : start + 32]
        for path, result in zip(chunk, faces.process_bytes([p.read_bytes() for p in chunk])):
            if result.status == "ok":
                vectors.append(max(result.faces, key=lambda f: f.det_score).embedding)
                races.append(path.name.split("_")[2])
    return np.asarray(vectors, np.float32), np.asarray(races)


def lfw_embeddings(lfw: Path, cache: Path) -> dict[str, np.ndarray | None]:
    pairs = read_lfw_pairs(lfw / "pairs.txt")
    names = sorted({p.left for p in pairs} | {p.right for p in pairs})
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        return {n: (v if ok else None) for n, v, ok in zip(saved["names"], saved["vectors"], saved["ok"])}
    embeddings, _ = embed_lfw_images(pipeline(), lfw / "images", names, "none")
    dim = len(next(v for v in embeddings.values() if v is not None))
    vectors = np.stack([embeddings[n] if embeddings[n] is not None else np.zeros(dim, np.float32) for n in names])
    np.savez(cache, names=np.asarray(names), vectors=vectors, ok=np.array([embeddings[n] is not None for n in names]))
    return embeddings


def all_pairs(count: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(count, k=1)


def race_gap(scores: np.ndarray, a: np.ndarray, b: np.ndarray, races: np.ndarray) -> dict:
    """Threshold at FMR 1e-3 over all pairs, then same-race FMR per race and max/min."""
    threshold = threshold_at_fmr(scores, TARGET_FMR)
    overall = float((scores >= threshold).mean())
    per_race = {}
    for code, name in RACES.items():
        mask = (races[a] == code) & (races[b] == code)
        per_race[name] = {"fmr": float((scores[mask] >= threshold).mean()), "impostor_pairs": int(mask.sum())}
    ratio, note = ratio_max_min({g: r["fmr"] for g, r in per_race.items()})
    return {"threshold": threshold, "overall_fmr": overall, "per_race": per_race, "max_min_ratio": ratio, "note": note}


def utkface_split(vectors: np.ndarray, races: np.ndarray, clusters: int, seed: int) -> list[dict]:
    order = np.random.default_rng(seed).permutation(len(vectors))
    halves = [np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])]
    results = []
    for learn, measure in ((0, 1), (1, 0)):
        learn_vectors = vectors[halves[learn]]
        la, lb = all_pairs(len(learn_vectors))
        learn_scores = np.einsum("ij,ij->i", learn_vectors[la], learn_vectors[lb])
        fsn = learn_fsn(learn_vectors, la, lb, learn_scores, clusters, TARGET_FMR, seed)
        measure_vectors, measure_races = vectors[halves[measure]], races[halves[measure]]
        ma, mb = all_pairs(len(measure_vectors))
        raw = np.einsum("ij,ij->i", measure_vectors[ma], measure_vectors[mb])
        normalized = fsn.normalize_pairs(measure_vectors, ma, mb, raw)
        results.append(
            {
                "learn_half": learn,
                "measure_half": measure,
                "faces": [len(learn_vectors), len(measure_vectors)],
                "raw": race_gap(raw, ma, mb, measure_races),
                "normalized": race_gap(normalized, ma, mb, measure_races),
            }
        )
    return results


def lfw_with_fsn(lfw: Path, embeddings: dict, vectors: np.ndarray, clusters: int, seed: int) -> dict:
    pairs = read_lfw_pairs(lfw / "pairs.txt")
    a, b = all_pairs(len(vectors))
    fsn = learn_fsn(vectors, a, b, np.einsum("ij,ij->i", vectors[a], vectors[b]), clusters, TARGET_FMR, seed)
    raw = protocol_summary(embeddings, pairs)
    dim = vectors.shape[1]
    offsets = {n: float(fsn.offsets_of(v[None])[0]) for n, v in embeddings.items() if v is not None}
    scores, genuine, failed, _ = score_pairs(embeddings, pairs)
    shift = np.array([(offsets.get(p.left, 0.0) + offsets.get(p.right, 0.0)) / 2 for p in pairs])
    normalized = protocol_summary_from_scores(scores - shift, embeddings, pairs)
    cluster = np.array(
        [
            fsn.clusters_of((embeddings[p.left] if embeddings[p.left] is not None else np.zeros(dim))[None])[0]
            for p in pairs
        ]
    )
    return {
        "raw": {k: raw[k] for k in ("accuracy_mean", "accuracy_std", "tmr_at_fmr_1e-3", "auc")},
        "normalized": {k: normalized[k] for k in ("accuracy_mean", "accuracy_std", "tmr_at_fmr_1e-3", "auc")},
        "fnmr_per_cluster": {
            "raw": cluster_fnmr(scores, genuine, failed, cluster),
            "normalized": cluster_fnmr(scores - shift, genuine, failed, cluster),
        },
        "pairs": len(pairs),
    }


def protocol_summary_from_scores(scores, embeddings, pairs) -> dict:
    """protocol_summary on given scores: a stand-in embedding per image whose dot products are those scores
    is not possible, so the folds run directly on the scores here."""
    from jobs.audit.verification import k_fold_accuracy, roc_auc, tmr_at_fmr, worst_case_scores

    _, genuine, failed, folds = score_pairs(embeddings, pairs)
    accuracies = np.array([r.accuracy for r in k_fold_accuracy(scores, genuine, failed, folds)])
    worst = worst_case_scores(scores, genuine, failed)
    return {
        "accuracy_mean": round(float(accuracies.mean()), 5),
        "accuracy_std": round(float(accuracies.std(ddof=1)), 5),
        "tmr_at_fmr_1e-3": round(tmr_at_fmr(worst, genuine, 1e-3)[0], 5),
        "auc": round(roc_auc(worst, genuine), 5),
    }


def cluster_fnmr(scores, genuine, failed, cluster) -> dict:
    usable = ~failed
    threshold = threshold_at_fmr(scores[usable & ~genuine], TARGET_FMR)
    out = {"threshold": threshold, "overall_fnmr": float(fmr_fnmr(scores[usable & genuine], [], [threshold])[1][0])}
    per = {}
    for c in np.unique(cluster):
        mask = usable & genuine & (cluster == c)
        if mask.sum() >= 20:
            per[str(int(c))] = {"fnmr": float((scores[mask] < threshold).mean()), "genuine_pairs": int(mask.sum())}
    out["per_cluster"] = per
    out["max_min_ratio"], out["note"] = ratio_max_min({g: r["fnmr"] for g, r in per.items()})
    return out


def matched_calibration(
    vectors: np.ndarray, races: np.ndarray, genders: np.ndarray, lfw: Path, embeddings: dict, clusters: int, seed: int
) -> dict:
    """`lineup audit calibrate --matched-impostors race,gender` against the ordinary calibration, both at
    FMR 1e-3 on all of utkface-dev, on raw scores and on FSN-normalized ones (FSN learnt on all of
    utkface-dev, no label read): the same-race FMR per race at each threshold, and the FNMR each gives
    on LFW View 2's genuine pairs (normalized there by the same FSN)."""
    if len(genders) != len(vectors):
        raise SystemExit(f"{len(vectors)} utkface faces but {len(genders)} images: a face was missed")
    a, b = all_pairs(len(vectors))
    raw = np.einsum("ij,ij->i", vectors[a], vectors[b])
    fsn = learn_fsn(vectors, a, b, raw, clusters, TARGET_FMR, seed)
    pairs = read_lfw_pairs(lfw / "pairs.txt")
    lfw_raw, genuine, failed, _ = score_pairs(embeddings, pairs)
    offsets = {n: float(fsn.offsets_of(v[None])[0]) for n, v in embeddings.items() if v is not None}
    shift = np.array([(offsets.get(p.left, 0.0) + offsets.get(p.right, 0.0)) / 2 for p in pairs])
    cells = np.char.add(np.char.add("race=", races), np.char.add(",gender=", genders)).astype(object)
    same = cells[a] == cells[b]
    out: dict = {"data": "utkface-dev (all 2,000 faces), LFW View 2's 3,000 genuine pairs", "target_fmr": TARGET_FMR}
    for scores_name, scores, lfw_scores in (
        ("raw", raw, lfw_raw),
        ("fsn", fsn.normalize_pairs(vectors, a, b, raw), lfw_raw - shift),
    ):
        mated = lfw_scores[genuine & ~failed]
        matched, worst, _, unresolved = worst_group_threshold(scores[same], cells[a][same], TARGET_FMR)
        for name, threshold in (("ordinary", threshold_at_fmr(scores, TARGET_FMR)), ("matched_race_gender", matched)):
            same_race = {
                RACES[r]: float((scores[(races[a] == r) & (races[b] == r)] >= threshold).mean()) for r in RACES
            }
            out[f"{scores_name}_{name}"] = {
                "threshold": round(threshold, 6),
                "fmr_all_pairs": float((scores >= threshold).mean()),
                "same_race_fmr": same_race,
                "same_race_fmr_max": max(same_race.values()),
                "lfw_view2_fnmr": round(float((mated < threshold).mean()), 5),
            }
        out[f"{scores_name}_matched_race_gender"].update(worst_group=worst, cells_unresolved=unresolved)
        out[f"{scores_name}_fnmr_cost_points"] = round(
            100
            * (
                out[f"{scores_name}_matched_race_gender"]["lfw_view2_fnmr"]
                - out[f"{scores_name}_ordinary"]["lfw_view2_fnmr"]
            ),
            3,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lineup-bench-fairness"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    data = data_root()
    vectors, races = utkface_embeddings(data / "utkface-dev", args.work / "utkface.npz")
    embeddings = lfw_embeddings(data / "lfw", args.work / "lfw.npz")
    split = utkface_split(vectors, races, args.clusters, args.seed)
    raw_ratios = [r["raw"]["max_min_ratio"] for r in split]
    fsn_ratios = [r["normalized"]["max_min_ratio"] for r in split]
    lfw = lfw_with_fsn(data / "lfw", embeddings, vectors, args.clusters, args.seed)
    genders = utkface_genders(data / "utkface-dev")
    matched = matched_calibration(vectors, races, genders, data / "lfw", embeddings, args.clusters, args.seed)
    accuracy_drop = (lfw["raw"]["accuracy_mean"] - lfw["normalized"]["accuracy_mean"]) * 100
    tar_drop = (lfw["raw"]["tmr_at_fmr_1e-3"] - lfw["normalized"]["tmr_at_fmr_1e-3"]) * 100
    print(
        json.dumps(
            {
                "bench": "fairness",
                "method": "fsn",
                "clusters": args.clusters,
                "seed": args.seed,
                "utkface_split": split,
                "race_fmr_ratio_raw": raw_ratios,
                "race_fmr_ratio_normalized": fsn_ratios,
                "ratio_target_met": all(
                    n is not None and r is not None and n <= r / 2 for r, n in zip(raw_ratios, fsn_ratios)
                ),
                "lfw": lfw,
                "lfw_accuracy_drop_points": round(accuracy_drop, 3),
                "lfw_tar_drop_points": round(tar_drop, 3),
                "lfw_target_met": accuracy_drop <= 0.1 and tar_drop <= 0.1,
                "matched_impostor_calibration": matched,
                "measured_on": f"utkface-dev and LFW View 2 from {data}; default pack; {os.cpu_count()} CPUs; "
                f"load average {os.getloadavg()[0]:.2f}",
            }
        )
    )


if __name__ == "__main__":
    main()
