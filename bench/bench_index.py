"""Index benchmark: 1,000,000 seeded synthetic 128-d vectors shaped like real face embeddings, and the
real LFW faces table. Prints one JSON line.

Synthetic data: identities as centres with several samples each, shaped by the LFW faces table
(subject_id = person). Centres are drawn from N(mu, a_b * S_b) and samples around them from
N(0, a_w * S_w), then L2-normalised, where mu is LFW's mean embedding, S_b the covariance of LFW's
per-person mean embeddings and S_w the pooled within-person covariance (persons with two or more
faces). Real embeddings are not isotropic: most of their spread lies in a few directions, which is what
gives an ANN index structure to exploit. The two scalars a_b, a_w are chosen by grid search so that the
mean and spread of within-identity and between-identity cosines match LFW's; both distributions are
reported side by side.

Reported per gallery: build time (Spark job, session excluded), peak RSS of the driver and of Spark's
processes, the index chosen, recall@10 against exact search with the tuned nprobe, and queries/s of
the sharded index against exact flat search (FAISS IndexFlatIP and numpy GEMM) on the same queries.

Usage: .venv/bin/python -m bench.bench_index [--vectors 1000000] [--lfw-faces-table PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import data_root
from jobs.common.config import load_config
from jobs.common.spark import get_spark
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.shards.build import exact_top_k, recall_at_k
from jobs.shards.files import load_index

log = logging.getLogger("bench_index")


def cosine_stats(vectors: np.ndarray, labels: np.ndarray, rng: np.random.Generator, pairs: int = 200_000) -> dict:
    """Mean/std of same-label and different-label cosines over seeded random pairs."""
    order = np.argsort(labels, kind="stable")
    labels, vectors = labels[order], vectors[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    sizes = np.diff(np.r_[starts, len(labels)])
    multi = starts[sizes > 1]
    multi_sizes = sizes[sizes > 1]
    group = rng.integers(0, len(multi), pairs)
    a = multi[group] + (rng.random(pairs) * multi_sizes[group]).astype(int)
    b = multi[group] + (rng.random(pairs) * multi_sizes[group]).astype(int)
    keep = a != b
    genuine = np.einsum("ij,ij->i", vectors[a[keep]], vectors[b[keep]])
    x, y = rng.integers(0, len(labels), pairs), rng.integers(0, len(labels), pairs)
    keep = labels[x] != labels[y]
    impostor = np.einsum("ij,ij->i", vectors[x[keep]], vectors[y[keep]])
    return {
        "genuine_mean": float(genuine.mean()),
        "genuine_std": float(genuine.std()),
        "impostor_mean": float(impostor.mean()),
        "impostor_std": float(impostor.std()),
    }


@dataclass(frozen=True)
class Shape:
    """Second-order shape of real embeddings: global mean, between- and within-identity covariances."""

    mean: np.ndarray
    between: np.ndarray  # Cholesky-ready covariance of identity centres
    within: np.ndarray  # pooled covariance of samples around their identity's centre


def measure_shape(vectors: np.ndarray, labels: np.ndarray) -> Shape:
    counts = np.bincount(labels)
    sums = np.zeros((counts.size, vectors.shape[1]))
    np.add.at(sums, labels, vectors)
    centres = sums / counts[:, None]
    multi = counts >= 2
    residuals = vectors[multi[labels]] - centres[labels[multi[labels]]]
    dof = int(multi[labels].sum() - multi.sum())
    within = residuals.T @ residuals / max(dof, 1)
    between = np.cov(centres[multi].T)
    return Shape(vectors.mean(axis=0), between, within)


def _root(covariance: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(covariance)
    return vectors * np.sqrt(np.clip(values, 0, None))


def synthesize(count: int, per_identity: int, shape: Shape, a_b: float, a_w: float, seed: int, sample_seed=None):
    """`count` unit vectors, `per_identity` per identity; identities from `seed`, samples from `sample_seed`
    (default: the same stream), so a second call with another sample_seed gives new photos of the same people."""
    rng = np.random.default_rng(seed)
    dim = shape.mean.size
    root_b, root_w = _root(a_b * shape.between), _root(a_w * shape.within)
    identities = -(-count // per_identity)
    centres = (shape.mean + rng.normal(size=(identities, dim)) @ root_b.T).astype(np.float32)
    labels = np.repeat(np.arange(identities), per_identity)[:count]
    if sample_seed is not None:
        rng = np.random.default_rng(sample_seed)
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):
        chunk = labels[start : start + 100_000]
        block = centres[chunk] + rng.normal(size=(len(chunk), dim)) @ root_w.T
        out[start : start + len(chunk)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, labels


def mated_probes(
    count: int, per_identity: int, shape: Shape, a_b: float, a_w: float, seed: int, probe_seed: int, probes: int
) -> tuple[np.ndarray, np.ndarray]:
    """`probes` new samples (other noise) of random identities of the gallery `synthesize(count, ...,
    seed)` made: a known person searched with a new photo. Returns (vectors, identity labels); only the
    probes' identities are drawn, so memory does not grow with the gallery."""
    rng = np.random.default_rng(seed)
    dim = shape.mean.size
    root_b, root_w = _root(a_b * shape.between), _root(a_w * shape.within)
    identities = -(-count // per_identity)
    centres = (shape.mean + rng.normal(size=(identities, dim)) @ root_b.T).astype(np.float32)
    pick = np.random.default_rng(probe_seed)
    labels = pick.choice(identities, probes, replace=False)
    block = centres[labels] + pick.normal(size=(probes, dim)) @ root_w.T
    return (block / np.linalg.norm(block, axis=1, keepdims=True)).astype(np.float32), labels


def fit(target: dict, shape: Shape, per_identity: int) -> tuple[tuple[float, float], dict]:
    """Grid search for (a_b, a_w) whose cosine statistics are closest to the target's."""
    best, best_error = (1.0, 1.0), np.inf
    for a_b in (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 1.7, 2.0):
        for a_w in (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 1.7, 2.0):
            vectors, labels = synthesize(20_000, per_identity, shape, a_b, a_w, 1)
            stats = cosine_stats(vectors, labels, np.random.default_rng(2), 20_000)
            error = sum((stats[k] - target[k]) ** 2 for k in target)
            if error < best_error:
                best, best_error = (a_b, a_w), error
    vectors, labels = synthesize(20_000, per_identity, shape, *best, 1)
    return best, cosine_stats(vectors, labels, np.random.default_rng(3), 50_000)


def write_gallery(path: Path, vectors: np.ndarray, model_id: str, spark) -> None:
    """A faces-shaped table: Parquet written by Arrow, converted in place to Delta."""
    path.mkdir(parents=True)
    for part, start in enumerate(range(0, len(vectors), 200_000)):
        block = vectors[start : start + 200_000]
        ids = np.arange(start, start + len(block), dtype=np.int64) * 2654435761 % (2**62)
        table = pa.table(
            {
                "face_id": ids,
                "embedding": pa.FixedSizeListArray.from_arrays(block.reshape(-1), block.shape[1]).cast(
                    pa.list_(pa.float32())
                ),
                "model_id": pa.array([model_id] * len(block)),
                "status": pa.array(["ok"] * len(block)),
            }
        )
        pq.write_table(table, path / f"part-{part:05d}.parquet")
    spark.sql(f"CONVERT TO DELTA parquet.`{path}`")


def process_tree_peak_rss_mb() -> dict:
    """Peak RSS (VmHWM) of this process and of every descendant still running (the JVM, Python workers)."""
    peaks = {pid: peak for pid, _, peak in tree_peaks(os.getpid())}
    return {
        "driver_mb": round(peaks.pop(os.getpid(), 0.0)),
        "spark_processes_mb": round(sum(peaks.values())),
    }


def tree_peaks(root: int) -> list[tuple[int, str, float]]:
    """(pid, kind, VmHWM in MB) of `root` and every descendant still running; kind is java, python or
    other (by the executable's name)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        peak = next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:")), 0.0)
        kind = "java" if exe == "java" else ("python" if exe.startswith("python") else "other")
        found.append((pid, kind, peak))
    return found


def query_rates(out: Path, gallery: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int = 10) -> dict:
    import faiss

    faiss.omp_set_num_threads(len(os.sched_getaffinity(0)))
    index = load_index(out)
    started = time.perf_counter()
    _, found = index.search(queries, k)
    index_s = time.perf_counter() - started
    flat = faiss.IndexFlatIP(gallery.shape[1])
    flat.add(gallery)
    started = time.perf_counter()
    flat.search(queries, k)
    flat_s = time.perf_counter() - started
    started = time.perf_counter()
    _, truth = exact_top_k(gallery, ids, queries, k)
    numpy_s = time.perf_counter() - started
    return {
        "queries": len(queries),
        "index_qps": round(len(queries) / index_s, 1),
        "faiss_flat_qps": round(len(queries) / flat_s, 1),
        "numpy_gemm_qps": round(len(queries) / numpy_s, 1),
        "speedup_vs_faiss_flat": round(flat_s / index_s, 2),
        "recall_at_10_on_these_queries": round(recall_at_k(found, truth), 4),
    }


def shard_of(ids: np.ndarray, shards: int) -> np.ndarray:
    return np.mod(ids, shards)


def large_query_rates(out: Path, gallery: np.ndarray, ids: np.ndarray, probes: np.ndarray, exact_probes: int) -> dict:
    """The job's index against the exact sharded flat index (the job's own exact choice: one IndexFlatIP
    per shard, `search_shards`), both timed on every probe. The exact index's results are the ground
    truth for recall@10; they are checked against numpy's blocked GEMM on the first `exact_probes`."""
    import faiss

    from jobs.shards.search import search_shards

    cores = len(os.sched_getaffinity(0))
    faiss.omp_set_num_threads(cores)
    index = load_index(out)
    started = time.perf_counter()
    _, found = index.search(probes, 10)
    index_s = time.perf_counter() - started
    index_bytes = sum((out / entry["file"]).stat().st_size for entry in index.manifest["shards"])
    del index
    shard_count = 4
    keys = shard_of(ids, shard_count)
    flat_shards = []
    for shard in range(shard_count):
        flat = faiss.IndexIDMap2(faiss.IndexFlatIP(gallery.shape[1]))
        mask = keys == shard
        flat.add_with_ids(gallery[mask], ids[mask])
        flat_shards.append(flat)
    started = time.perf_counter()
    _, truth = search_shards(flat_shards, np.zeros(0, np.int64), probes, 10)
    flat_s = time.perf_counter() - started
    flat_bytes = sum(shard.ntotal for shard in flat_shards) * (gallery.shape[1] * 4 + 8)
    del flat_shards
    started = time.perf_counter()
    _, numpy_truth = exact_top_k(gallery, ids, probes[:exact_probes], 10)
    numpy_s = time.perf_counter() - started
    index_qps, flat_qps = len(probes) / index_s, len(probes) / flat_s
    return {
        "probes": len(probes),
        "index_qps": round(index_qps, 1),
        "index_recall_at_10": round(recall_at_k(found, truth), 4),
        "index_memory_gb": round(index_bytes / 1e9, 3),
        "exact_sharded_flat_qps": round(flat_qps, 1),
        "exact_sharded_flat_recall_at_10_vs_numpy": round(recall_at_k(truth[:exact_probes], numpy_truth), 4),
        "exact_sharded_flat_memory_gb": round(flat_bytes / 1e9, 3),
        "numpy_gemm_exact_qps": round(exact_probes / numpy_s, 1),
        "numpy_probes_timed": exact_probes,
        "speedup_vs_exact_sharded_flat": round(index_qps / flat_qps, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def index_in_subprocess(table: Path, out: Path, cores: int, extra: list[str]) -> dict:
    """`lineup index` in its own process tree (its own SparkSession), so the peak RSS of its driver and of
    its Spark processes is the build's alone, not this benchmark's gallery."""
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "jobs.cli",
        "index",
        "--set",
        f"index.faces_table={table}",
        "--set",
        f"index.index_dir={out}",
        "--set",
        f"spark.master=local[{cores}]",
        "--set",
        "spark.driver_memory=8g",
        *[arg for setting in extra for arg in ("--set", setting)],
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peaks: dict[int, tuple[str, float]] = {}
    tree_peak = 0.0  # the largest sum of the tree's resident memory at one moment (sampled each second)
    while process.poll() is None:
        found = tree_peaks(process.pid)
        for pid, name, peak in found:
            if peak > peaks.get(pid, ("", 0.0))[1]:
                peaks[pid] = (name, peak)
        tree_peak = max(tree_peak, sum(_rss_mb(pid) for pid, _, _ in found))
        time.sleep(1.0)
    wall = time.perf_counter() - started
    stdout = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise RuntimeError(f"lineup index exited {process.returncode}: {stdout[-2000:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    workers = [peak for name, peak in peaks.values() if name == "python" and peak > 0]
    summary["wall_s"] = round(wall, 1)
    summary["peak_rss_mb"] = {
        "driver_python": round(peaks.get(process.pid, ("", 0.0))[1]),
        "driver_jvm": round(max((p for n, p in peaks.values() if n == "java"), default=0.0)),
        "python_worker_max": round(max(workers[1:], default=0.0)) if len(workers) > 1 else None,
        "all_python_workers": round(sum(workers[1:])),  # each at its own peak: an upper bound of their sum
        "python_workers_seen": max(len(workers) - 1, 0),
        "process_tree_sampled": round(tree_peak),
    }
    return summary


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def index_gallery(spark, table: Path, out: Path, label: str, extra: list[str]) -> dict:
    config = load_config(IndexConfig, None, [f"index.faces_table={table}", f"index.index_dir={out}", *extra])
    started = time.perf_counter()
    summary = dict(run_index(config, spark))  # the result is read-only: this adds the bench's own fields
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    summary["peak_rss"] = process_tree_peak_rss_mb()
    log.info("%s: %s", label, summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--lfw-faces-table", help="a faces table of LFW with subject_id (from `lineup embed`)")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--per-identity", type=int, default=5)
    parser.add_argument(
        "--large",
        action="store_true",
        help="the large-gallery run: the job chooses the index, builds it in its own process (peak RSS of "
        "driver and workers), and its search is compared with the exact sharded flat index",
    )
    parser.add_argument(
        "--exact-probes",
        type=int,
        default=1000,
        help="--large: probes numpy GEMM is timed on (it checks the exact index's results)",
    )
    parser.add_argument(
        "--synthetic-factory",
        default="IVF4096,Flat",
        help="index for the synthetic gallery ('' = the job's own choice, exact at the default recall floor 1.0)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    cores = len(os.sched_getaffinity(0))
    scratch = Path(tempfile.mkdtemp(prefix="bench-index-"))
    report: dict = {"bench": "index"}
    try:
        started = time.perf_counter()
        spark = get_spark(load_config(IndexConfig, None, [f"spark.master=local[{cores}]"]).spark)
        report["session_start_s"] = round(time.perf_counter() - started, 1)
        lfw_table = args.lfw_faces_table or _embed_lfw(spark)
        frame = spark.read.format("delta").load(lfw_table).where("status = 'ok' and subject_id is not null")
        arrow = frame.select("face_id", "subject_id", "embedding").toArrow()
        lfw_ids = arrow.column("face_id").to_numpy().astype(np.int64)
        lfw_vectors = (
            arrow.column("embedding").combine_chunks().flatten().to_numpy().astype(np.float32).reshape(len(lfw_ids), -1)
        )
        labels = np.unique(arrow.column("subject_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
        target = cosine_stats(lfw_vectors, labels, np.random.default_rng(0))
        shape = measure_shape(lfw_vectors, labels)
        params, synthetic_stats = fit(target, shape, args.per_identity)
        report["distributions"] = {
            "lfw": _rounded(target),
            "synthetic": _rounded(synthetic_stats),
            "a_between_a_within": params,
            "samples_per_identity": args.per_identity,
        }

        gallery, _ = synthesize(args.vectors, args.per_identity, shape, *params, seed=42)
        write_gallery(scratch / "synthetic", gallery, "synthetic", spark)
        if args.large:
            spark.stop()  # the build runs in its own process; this one keeps only the gallery for ground truth
            report["synthetic"] = index_in_subprocess(
                scratch / "synthetic", scratch / "synthetic_index", cores, ["index.recall_floor=0.95"]
            )
            probes, _ = mated_probes(args.vectors, args.per_identity, shape, *params, 42, 7, args.queries)
            ids = np.arange(len(gallery), dtype=np.int64) * 2654435761 % (2**62)
            report["synthetic"]["search"] = large_query_rates(
                scratch / "synthetic_index", gallery, ids, probes, args.exact_probes
            )
            report["measured_on"] = f"{platform.node()} {platform.machine()}, {cores} CPUs, local[{cores}]"
            print(json.dumps(report))
            return
        forced = [f"index.factory={args.synthetic_factory}"] if args.synthetic_factory else []
        report["synthetic"] = index_gallery(
            spark, scratch / "synthetic", scratch / "synthetic_index", "synthetic", forced
        )
        # Probes: new samples of gallery identities (same centres, other noise), as when a known person
        # is searched with a new photo.
        others, _ = synthesize(args.vectors, args.per_identity, shape, *params, seed=42, sample_seed=7)
        probes = others[np.random.default_rng(7).choice(len(others), args.queries, replace=False)]
        del others
        ids = np.arange(len(gallery), dtype=np.int64) * 2654435761 % (2**62)
        report["synthetic"]["search"] = query_rates(scratch / "synthetic_index", gallery, ids, probes)
        del gallery

        report["lfw"] = index_gallery(spark, Path(lfw_table), scratch / "lfw_index", "lfw", [])
        report["lfw"]["search"] = query_rates(scratch / "lfw_index", lfw_vectors, lfw_ids, lfw_vectors[:2000])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["measured_on"] = f"{platform.node()} {platform.machine()}, {cores} CPUs, local[{cores}]"
    print(json.dumps(report))


def _embed_lfw(spark) -> str:
    """LFW's faces table under $LINEUP_HOME/data/bench (incremental: a rerun only checks it)."""
    from jobs.common.paths import default_data_root
    from jobs.embed.config import EmbedConfig
    from jobs.embed.job import run_embed

    table = default_data_root() / "bench" / "faces_lfw"
    config = load_config(
        EmbedConfig,
        None,
        [
            f"embed.input.path={data_root() / 'lfw' / 'images'}",
            f"embed.table_path={table}",
            "embed.input.glob=*.jpg",
            "embed.labels.subject_from_path=([^/]+)/[^/]+$",
        ],
    )
    run_embed(config, spark)
    return str(table)


def _rounded(stats: dict) -> dict:
    return {k: round(v, 4) for k, v in stats.items()}


if __name__ == "__main__":
    main()
