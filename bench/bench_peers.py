"""Peer benchmark: Lineup against autofaiss on the same vectors, probes and memory budget, and Lineup's
query job against plain FAISS on the job's own shard files. Prints one JSON line; exits 1 when a stated
target does not hold in this run.

Data (per size): `--sizes` gallery vectors shaped like the default pack's LFW embeddings
(bench/bench_index.py's generator, 5 photos per identity) and `--probes` mated probes (new photos of
gallery identities); the exact top-10 of each probe (FAISS IndexFlatIP) is the truth, and its speed is
what exact search costs. Cached under <data_root>/bench/peers/n<size> (the 10M gallery is 5.1 GB).

Each system builds once with the same memory budget (`--budget-gb`): Lineup by `lineup index` in its own
process tree (recall floor the lowest of `--floors`), autofaiss by `build_index` in the peers virtualenv
(`make peers`). Then, for each floor, each is tuned on the probes to the lowest search setting whose
recall@10 reaches it (bench/peers/sweep.py, one rule for both) and timed there with the same threads.
Peak memory: autofaiss's process (VmHWM); Lineup's whole process tree (driver, JVM, Python workers),
its resident memory summed once a second. Targets at every size and floor: Lineup's queries/s >=
autofaiss's, its build no slower, and the query job >= 0.8x plain FAISS on the job's shard files (same
nprobe, same probes, same threads: the job's warm run against FAISS's search; the cold run with FAISS's
file loading beside it).

Usage: make peers && .venv/bin/python -m bench.bench_peers [--sizes 1000000 10000000] [--probes 10000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.bench_index import cosine_stats, fit, index_in_subprocess, mated_probes, measure_shape, synthesize
from bench.common import REPO_ROOT
from bench.peers.sweep import K, lowest_setting, queries_per_s, recall_at_k

log = logging.getLogger("bench_peers")
PEERS_PYTHON = REPO_ROOT / ".peers-venv" / "bin" / "python"
PER_IDENTITY = 5
JOB_VS_FAISS_TARGET = 0.8
BULK_SCALE = 10  # the query job's third run: this many times the probes
PROBE_ID_BASE = 10**12  # probe face_ids apart from the gallery's (which are row numbers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--probes", type=int, default=10_000)
    parser.add_argument("--budget-gb", type=float, default=8.0, help="both systems' memory budget (Lineup's default)")
    parser.add_argument("--floors", type=float, nargs="+", default=[0.95, 0.99])
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["exact", "lineup", "query_job", "autofaiss"],
        default=["lineup", "query_job", "autofaiss"],
        help="which parts to (re)run; the others are read from the last run's results in the cache (exact: "
        "time exact search again; it is otherwise timed once, when the vectors are made)",
    )
    parser.add_argument("--prepare-only", action="store_true", help="make the cached vectors and tables, no more")
    parser.add_argument("--lfw-faces-table", help="a faces table of LFW with subject_id (default: embedded once)")
    parser.add_argument("--cache", type=Path, help="where vectors and tables live (default <data_root>/bench/peers)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not PEERS_PYTHON.exists():
        raise SystemExit(f"{PEERS_PYTHON} is missing: run `make peers` (autofaiss in its own virtualenv)")
    from jobs.common.paths import default_data_root

    cores = len(os.sched_getaffinity(0))
    cache = args.cache or default_data_root() / "bench" / "peers"
    report: dict = {"bench": "peers", "budget_gb": args.budget_gb, "probes": args.probes, "floors": args.floors}
    report["measured_on"] = f"{platform.node()} {platform.machine()}, {cores} CPUs, {cores} threads a side"
    shape, params = None, None
    failures: list[str] = []
    for size in args.sizes:
        folder = cache / f"n{size}-p{args.probes}"
        if not (folder / "ready").exists():
            if shape is None:
                shape, params = _shape(args.lfw_faces_table)
            _prepare(folder, size, args.probes, shape, params, cores)
        if args.prepare_only:
            continue
        entry = {"exact": json.loads((folder / "exact.json").read_text())}  # timed when the data was made
        for part in ("exact", "lineup", "query_job", "autofaiss"):
            if part == "exact" and part not in args.parts:
                continue
            saved = folder / f"result-{part}.json"
            if part in args.parts or not saved.exists():
                entry[part] = _run_part(part, folder, size, entry, args, cores)
                entry[part]["load_average"] = [round(x, 2) for x in os.getloadavg()]
                entry[part]["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
                saved.write_text(json.dumps(entry[part]))
            else:  # a part not asked for is the last run's (its load average and time stated in it)
                entry[part] = json.loads(saved.read_text())
        failures += _check(size, entry, args.floors)
        report[f"n{size}"] = entry
        log.info("n=%d: %s", size, json.dumps(entry))
    report["failures"] = failures
    report["holds"] = not failures
    print(json.dumps(report))
    sys.exit(1 if failures else 0)


def _run_part(part: str, folder: Path, size: int, entry: dict, args, cores: int) -> dict:
    if part == "exact":
        return _exact(folder, cores)
    if part == "lineup":
        return _lineup(folder, size, args, cores)
    if part == "query_job":
        return _query_job(folder, entry["lineup"], cores)
    return _autofaiss(folder, args, cores)


def _shape(lfw_table: str | None):
    """LFW's embedding shape and the generator's two scalars fitted to it (bench/bench_index.py)."""
    from bench.bench_index import _embed_lfw
    from jobs.common.config import load_config
    from jobs.common.spark import get_spark
    from jobs.index.config import IndexConfig

    spark = get_spark(load_config(IndexConfig, None, []).spark)
    table = lfw_table or _embed_lfw(spark)
    arrow = (
        spark.read.format("delta")
        .load(table)
        .where("status = 'ok' and subject_id is not null")
        .select("subject_id", "embedding")
        .toArrow()
    )
    vectors = arrow.column("embedding").combine_chunks().flatten().to_numpy().astype(np.float32)
    vectors = vectors.reshape(arrow.num_rows, -1)
    labels = np.unique(arrow.column("subject_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
    spark.stop()
    shape = measure_shape(vectors, labels)
    params, _ = fit(cosine_stats(vectors, labels, np.random.default_rng(0)), shape, PER_IDENTITY)
    return shape, params


def _prepare(folder: Path, size: int, probe_count: int, shape, params, cores: int) -> None:
    """Vectors, probes, exact truth, and Lineup's faces and probe tables; `ready` written last."""

    from bench.bench_query import write_faces_table
    from jobs.common.config import load_config
    from jobs.common.spark import get_spark
    from jobs.index.config import IndexConfig

    shutil.rmtree(folder, ignore_errors=True)
    (folder / "gallery").mkdir(parents=True)
    gallery, labels = synthesize(size, PER_IDENTITY, shape, *params, seed=42)
    probes, probe_labels = mated_probes(size, PER_IDENTITY, shape, *params, 42, 7, probe_count)
    np.save(folder / "gallery" / "gallery.npy", gallery)
    np.save(folder / "probes.npy", probes)
    exact, truth = _exact_search(gallery, probes, cores)
    np.save(folder / "truth.npy", truth)
    (folder / "exact.json").write_text(json.dumps(exact))
    spark = get_spark(load_config(IndexConfig, None, ["spark.driver_memory=8g"]).spark)
    ids = np.arange(size, dtype=np.int64)
    write_faces_table(spark, folder / "faces", ids, gallery, labels)
    del gallery
    write_faces_table(spark, folder / "probe_faces", PROBE_ID_BASE + np.arange(probe_count), probes, probe_labels)
    spark.stop()
    (folder / "ready").write_text("")


def _exact_search(gallery: np.ndarray, probes: np.ndarray, cores: int) -> tuple[dict, np.ndarray]:
    """Exact top-10 of every probe (the truth) and its speed: what recall floor 1.0 costs."""
    import faiss

    faiss.omp_set_num_threads(cores)
    flat = faiss.IndexFlatIP(gallery.shape[1])
    flat.add(gallery)
    started = time.perf_counter()
    _, truth = flat.search(probes, K)
    exact_s = time.perf_counter() - started
    exact = {
        "system": "exact search (FAISS IndexFlatIP, the kernel of Lineup's Flat shards)",
        "queries_per_s": round(len(probes) / exact_s, 1),
        "recall_at_10": 1.0,
        "index_bytes": int(gallery.nbytes),
    }
    return exact, truth


def _exact(folder: Path, cores: int) -> dict:
    """The exact search timed again on the cached vectors (its truth is the cached one)."""
    gallery = np.load(folder / "gallery" / "gallery.npy", mmap_mode="r")
    exact, truth = _exact_search(np.ascontiguousarray(gallery), np.load(folder / "probes.npy"), cores)
    if not np.array_equal(truth, np.load(folder / "truth.npy")):
        raise SystemExit(f"{folder}: exact search no longer gives the cached truth")
    return exact


def _lineup(folder: Path, size: int, args, cores: int) -> dict:
    """`lineup index` with the budget and the lowest floor, then each floor's lowest nprobe on the probes."""
    import faiss

    from jobs.shards.files import load_index

    index_dir = folder / "lineup_index"
    shutil.rmtree(index_dir, ignore_errors=True)
    settings = [f"index.recall_floor={min(args.floors)}", f"index.memory_budget_gb={args.budget_gb:g}"]
    built = index_in_subprocess(folder / "faces", index_dir, cores, settings)
    peaks = built["peak_rss_mb"]
    out: dict = {
        "system": "lineup index (its own choice)",
        "index_key": built["factory"],
        "build_s": built["wall_s"],
        "build_phases_s": built.get("timings_s"),
        "build_peak_rss_mb": peaks["process_tree_sampled"],
        "build_peak_rss_parts_mb": peaks,
        "manifest_setting": built.get("search_value"),
        "manifest_recall_at_10": built.get("recall_at_k"),
    }
    faiss.omp_set_num_threads(cores)
    index = load_index(index_dir)
    out["index_bytes"] = sum((index_dir / entry.file).stat().st_size for entry in index.manifest.shards)
    out["search_param"] = index.manifest.search_param
    probes, truth = np.load(folder / "probes.npy"), np.load(folder / "truth.npy")

    def search(queries: np.ndarray) -> np.ndarray:
        return index.search(queries, K)[1]

    def recall_of(value: int) -> float:
        index.set_search_param(value)
        return recall_at_k(search(probes), truth)

    out["floors"], measured = {}, {}
    for floor in args.floors:
        if index.manifest.search_param is None:
            value, recall, tried = None, recall_at_k(search(probes), truth), []
        else:
            value, recall, tried = lowest_setting(recall_of, index.manifest.search_candidates, floor, measured)
        entry: dict = {"setting": value, "recall_at_10": round(recall, 4), "tried": tried}
        if recall >= floor:
            if value is not None:
                index.set_search_param(value)
            entry["queries_per_s"] = round(queries_per_s(search, probes), 1)
        out["floors"][str(floor)] = entry
    return out


def _plain_faiss(folder: Path, setting: int | None, param: str | None, cores: int) -> dict:
    """The job's shard files read by FAISS alone in this process, searched with the manifest's setting,
    the shards' top-10 lists merged by numpy: what a user's own script would do."""
    import faiss

    manifest = json.loads((folder / "lineup_index" / "manifest.json").read_text())
    faiss.omp_set_num_threads(cores)
    probes = np.load(folder / "probes.npy")
    started = time.perf_counter()
    shards = [faiss.read_index(str(folder / "lineup_index" / entry["file"])) for entry in manifest["shards"]]
    load_s = time.perf_counter() - started
    space = faiss.ParameterSpace()
    for shard in shards:
        if param is not None and setting is not None:
            space.set_index_parameter(shard, param, setting)

    def search(queries: np.ndarray) -> np.ndarray:
        scores, ids = zip(*(_as_cosines(shard, *shard.search(queries, K)) for shard in shards))
        all_scores, all_ids = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, :K]
        return np.take_along_axis(all_ids, order, axis=1)

    qps = queries_per_s(search, probes)
    found = search(probes)
    return {
        "load_s": round(load_s, 2),
        "queries_per_s": round(qps, 1),
        "queries_per_s_with_load": round(len(probes) / (load_s + len(probes) / qps), 1),
        "recall_at_10": round(recall_at_k(found, np.load(folder / "truth.npy")), 4),
    }


def _as_cosines(shard, distances: np.ndarray, ids: np.ndarray):
    import faiss

    if shard.metric_type == faiss.METRIC_L2:
        return np.where(ids >= 0, 1 - distances / 2, -np.inf), ids
    return np.where(ids >= 0, distances, -np.inf), ids


def _query_job(folder: Path, lineup: dict, cores: int, bulk_scale: int = BULK_SCALE) -> dict:
    """`lineup query` over the probe table twice in one session (cold: its Python workers load the shards;
    warm: they kept them), then warm over `bulk_scale` times as many probes (the same vectors under new
    face_ids): the two warm runs split the job's time into a fixed part (commits, planning, stages) and a
    per-probe rate. Against plain FAISS on the same files with the manifest's setting."""
    from bench.bench_query import _ranked, write_faces_table
    from jobs.common.config import load_config
    from jobs.common.spark import get_spark
    from jobs.query.config import QueryConfig
    from jobs.query.job import run_query

    plain = _plain_faiss(folder, lineup["manifest_setting"], lineup["search_param"], cores)
    data = folder / "query_data"
    shutil.rmtree(data, ignore_errors=True)

    def config_for(probe_table: Path) -> QueryConfig:
        return load_config(
            QueryConfig,
            None,
            [
                f"spark.master=local[{cores}]",
                "spark.driver_memory=4g",
                f"spark.data_root={data}",
                f"query.probes.faces_table={probe_table}",
                f"query.index_dir={folder / 'lineup_index'}",
                f"query.k={K}",
            ],
        )

    config = config_for(folder / "probe_faces")
    spark = get_spark(config.spark)
    probe_vectors = np.load(folder / "probes.npy")
    probes = len(probe_vectors)
    bulk_table = folder / f"probe_faces_x{bulk_scale}"
    if not bulk_table.exists():  # new face_ids, the same vectors (and so the same work per probe)
        ids = PROBE_ID_BASE + np.arange(probes * bulk_scale)
        labels = np.zeros(len(ids), np.int64)
        write_faces_table(spark, bulk_table, ids, np.tile(probe_vectors, (bulk_scale, 1)), labels)
    runs = []
    for label, table, count in (
        ("cold", folder / "probe_faces", probes),
        ("warm", folder / "probe_faces", probes),
        (f"warm_x{bulk_scale}", bulk_table, probes * bulk_scale),
    ):
        started = time.perf_counter()
        summary = dict(run_query(config_for(table), spark))
        wall = time.perf_counter() - started
        runs.append({"run": label, "probes": count, "wall_s": round(wall, 2), "queries_per_s": round(count / wall, 1)})
        runs[-1]["phases_s"] = dict(summary.get("timings_s") or {})
        if label == "warm":
            matches = (
                spark.read.format("delta")
                .load(summary["outputs"]["matches_table"])
                .where(f"run_id = '{summary['run_id']}'")
                .select("probe_face_id", "rank", "gallery_face_id")
                .toPandas()
            )
    spark.stop()
    found = _ranked(matches, PROBE_ID_BASE + np.arange(probes), "probe_face_id", "gallery_face_id", "rank")
    warm, bulk = runs[1], runs[2]
    per_probe_s = (bulk["wall_s"] - warm["wall_s"]) / (bulk["probes"] - warm["probes"])
    return {
        "plain_faiss": plain,
        "job_runs": runs,
        "job_recall_at_10": round(recall_at_k(found, np.load(folder / "truth.npy")), 4),
        "warm_ratio": round(warm["queries_per_s"] / plain["queries_per_s"], 3),
        "cold_ratio_vs_faiss_with_load": round(runs[0]["queries_per_s"] / plain["queries_per_s_with_load"], 3),
        f"warm_x{bulk_scale}_ratio": round(bulk["queries_per_s"] / plain["queries_per_s"], 3),
        # the two warm runs as fixed + probes x per-probe: what a larger batch converges to
        "fixed_s": round(warm["wall_s"] - warm["probes"] * per_probe_s, 2),
        "marginal_queries_per_s": round(1 / per_probe_s, 1) if per_probe_s > 0 else None,
        "marginal_ratio": round(1 / per_probe_s / plain["queries_per_s"], 3) if per_probe_s > 0 else None,
    }


def _autofaiss(folder: Path, args, cores: int) -> dict:
    shutil.rmtree(folder / "autofaiss", ignore_errors=True)
    command = [str(PEERS_PYTHON), "-m", "bench.peers.autofaiss_side", "--data", str(folder)]
    command += ["--budget-gb", f"{args.budget_gb:g}", "--threads", str(cores), "--floors", *map(str, args.floors)]
    done = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"autofaiss's side exited {done.returncode}; its log is above")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(size: int, entry: dict, floors: list[float]) -> list[str]:
    failures = []
    lineup, peer = entry["lineup"], entry["autofaiss"]
    for floor in floors:
        ours, theirs = lineup["floors"][str(floor)], peer["floors"][str(floor)]
        if "queries_per_s" not in ours:
            failures.append(f"n={size}, floor {floor}: Lineup's index does not reach the floor")
        elif ours["queries_per_s"] < theirs.get("queries_per_s", 0.0):
            failures.append(
                f"n={size}, floor {floor}: Lineup {ours['queries_per_s']} queries/s "
                f"< autofaiss {theirs['queries_per_s']}"
            )
    if lineup["build_s"] > peer["build_s"]:
        failures.append(f"n={size}: Lineup's build {lineup['build_s']} s > autofaiss's {peer['build_s']} s")
    ratio = entry["query_job"]["warm_ratio"]
    if ratio < JOB_VS_FAISS_TARGET:
        failures.append(f"n={size}: the query job ran at {ratio}x plain FAISS (target {JOB_VS_FAISS_TARGET})")
    return failures


if __name__ == "__main__":
    main()
