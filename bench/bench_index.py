"""Index benchmark: 1,000,000 seeded synthetic 128-d vectors shaped like real face embeddings, and the
real LFW faces table. Prints one JSON line.

Synthetic data: identities as centres with several samples each, v = normalise(g + c + w) with a shared
offset g (dlib's embeddings sit in a narrow cone: even strangers score high), identity centres c ~ N(0,
sb^2 I) and per-sample noise w ~ N(0, sw^2 I). |g|, sb and sw are chosen by grid search so that the mean
and spread of within-identity and between-identity cosines match those measured on the LFW faces
table (subject_id = person); both distributions are reported side by side. On such data an ANN index
has neighbours worth finding, unlike uniform random vectors.

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
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import data_root
from jobs.common.config import load_config
from jobs.common.spark import get_spark
from jobs.index.build import exact_top_k, recall_at_k
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.index.shards import load_index

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


def synthesize(count: int, dim: int, per_identity: int, offset: float, sb: float, sw: float, seed: int):
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    g = offset * direction / np.linalg.norm(direction)
    identities = count // per_identity
    centres = rng.normal(scale=sb, size=(identities, dim)).astype(np.float32)
    labels = np.repeat(np.arange(identities), per_identity)[:count]
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):
        chunk = labels[start : start + 100_000]
        block = g + centres[chunk] + rng.normal(scale=sw, size=(len(chunk), dim))
        out[start : start + len(chunk)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, labels


def fit(target: dict, dim: int) -> tuple[tuple[float, float, float], dict]:
    """Grid search for (|g|, sb, sw) whose cosine statistics are closest to the target's."""
    best, best_error = None, np.inf
    for offset in np.linspace(0.0, 3.0, 13):
        for sb in (0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25):
            for sw in (0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1):
                vectors, labels = synthesize(20_000, dim, 5, offset, sb, sw, 1)
                stats = cosine_stats(vectors, labels, np.random.default_rng(2), 20_000)
                error = sum((stats[k] - target[k]) ** 2 for k in target)
                if error < best_error:
                    best, best_error = (float(offset), sb, sw), error
    vectors, labels = synthesize(20_000, dim, 5, *best, 1)
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
    children: dict[int, list[int]] = {}
    peaks: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(stat[1]), []).append(int(entry.name))
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[int(entry.name)] = int(line.split()[1]) / 1024
        except OSError:
            continue
    tree, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return {
        "driver_mb": round(peaks.get(os.getpid(), 0.0)),
        "spark_processes_mb": round(sum(peaks.get(p, 0.0) for p in tree[1:])),
    }


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
    _, truth = exact_top_k(gallery, ids, queries, k, block=65536)
    numpy_s = time.perf_counter() - started
    return {
        "queries": len(queries),
        "index_qps": round(len(queries) / index_s, 1),
        "faiss_flat_qps": round(len(queries) / flat_s, 1),
        "numpy_gemm_qps": round(len(queries) / numpy_s, 1),
        "speedup_vs_faiss_flat": round(flat_s / index_s, 2),
        "recall_at_10_on_these_queries": round(recall_at_k(found, truth), 4),
    }


def index_gallery(spark, table: Path, out: Path, label: str, extra: list[str]) -> dict:
    config = load_config(IndexConfig, None, [f"index.faces_table={table}", f"index.index_dir={out}", *extra])
    started = time.perf_counter()
    summary = run_index(config, spark)
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    summary["peak_rss"] = process_tree_peak_rss_mb()
    log.info("%s: %s", label, summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--lfw-faces-table", help="a faces table of LFW with subject_id (from `lineup embed`)")
    parser.add_argument("--queries", type=int, default=10_000)
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
        params, synthetic_stats = fit(target, lfw_vectors.shape[1])
        report["distributions"] = {
            "lfw": _rounded(target),
            "synthetic": _rounded(synthetic_stats),
            "offset_sb_sw": params,
        }

        gallery, identity = synthesize(args.vectors, lfw_vectors.shape[1], 5, *params, seed=42)
        write_gallery(scratch / "synthetic", gallery, "synthetic", spark)
        report["synthetic"] = index_gallery(spark, scratch / "synthetic", scratch / "synthetic_index", "synthetic", [])
        probes, _ = synthesize(args.queries * 5, lfw_vectors.shape[1], 5, *params, seed=42)  # same identities,
        rng = np.random.default_rng(7)  # new samples: a probe of a known person
        fresh = probes[rng.choice(len(probes), args.queries, replace=False)]
        probe_noise = rng.normal(scale=params[2], size=fresh.shape).astype(np.float32)
        fresh = (fresh + probe_noise) / np.linalg.norm(fresh + probe_noise, axis=1, keepdims=True)
        ids = np.arange(len(gallery), dtype=np.int64) * 2654435761 % (2**62)
        report["synthetic"]["search"] = query_rates(scratch / "synthetic_index", gallery, ids, fresh.astype(np.float32))
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
