"""autofaiss's side of bench/bench_peers.py, run by the peers virtualenv (`make peers`):

    .peers-venv/bin/python -m bench.peers.autofaiss_side --data DIR --budget-gb 8 --floors 0.95 0.99

DIR holds gallery/gallery.npy (float32, unit rows; face i is row i), probes.npy and truth.npy (exact
top-10 rows of each probe). autofaiss builds with the memory budget as `max_index_memory_usage`, reading
the .npy folder itself as its users do; then, for each floor, the lowest efSearch/nprobe whose recall@10
on the probes reaches it, and queries/s there (and at autofaiss's own setting). One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from bench.peers.sweep import K, lowest_setting, peak_rss_mb, queries_per_s, recall_at_k

CANDIDATES = {
    "efSearch": (16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    "nprobe": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--budget-gb", type=float, required=True)
    parser.add_argument("--floors", type=float, nargs="+", default=[0.95, 0.99])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--memory-available-gb", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import faiss
    from autofaiss import build_index

    faiss.omp_set_num_threads(args.threads)
    work = args.data / "autofaiss"
    work.mkdir(exist_ok=True)
    started = time.perf_counter()
    index, infos = build_index(
        embeddings=str(args.data / "gallery"),
        index_path=str(work / "knn.index"),
        index_infos_path=str(work / "infos.json"),
        max_index_memory_usage=f"{args.budget_gb:g}G",
        current_memory_available=f"{args.memory_available_gb:g}G",
        metric_type="ip",
        nb_cores=args.threads,
        verbose=logging.WARNING,
    )
    build_s = time.perf_counter() - started
    build_peak_mb = peak_rss_mb()
    if index is None:
        raise SystemExit(f"autofaiss built no index: {infos}")
    own_param = str(infos.get("index_param", "")) if infos else ""
    key = str(infos.get("index_key", ""))
    name = "efSearch" if "HNSW" in key and "IVF" not in key else "nprobe"
    probes = np.load(args.data / "probes.npy")
    truth = np.load(args.data / "truth.npy")
    space = faiss.ParameterSpace()

    def search(queries: np.ndarray) -> np.ndarray:
        return index.search(queries, K)[1]

    def recall_of(value: int) -> float:
        space.set_index_parameters(index, f"{name}={value}")
        return recall_at_k(search(probes), truth)

    report: dict = {
        "system": "autofaiss 2.18.0",
        "index_key": infos.get("index_key"),
        "build_s": round(build_s, 1),
        "build_peak_rss_mb": round(build_peak_mb),
        "index_bytes": (work / "knn.index").stat().st_size,
        "search_param": name,
        "floors": {},
    }
    nlist = _nlist(str(infos.get("index_key", "")))
    candidates = [v for v in CANDIDATES[name] if name != "nprobe" or v <= nlist]
    measured: dict[int, float] = {}
    for floor in args.floors:
        value, recall, tried = lowest_setting(recall_of, candidates, floor, measured)
        entry: dict = {"setting": value, "recall_at_10": round(recall, 4), "tried": tried}
        if value is not None:
            space.set_index_parameters(index, f"{name}={value}")
            entry["queries_per_s"] = round(queries_per_s(search, probes), 1)
        report["floors"][str(floor)] = entry
    if own_param:
        space.set_index_parameters(index, own_param)
        report["own_setting"] = {
            "param": own_param,
            "recall_at_10": round(recall_at_k(search(probes), truth), 4),
            "queries_per_s": round(queries_per_s(search, probes), 1),
        }
    report["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(report))


def _nlist(key: str) -> int:
    for part in key.replace("_", ",").split(","):
        if part.startswith("IVF") and part[3:].isdigit():
            return int(part[3:])
    return 1 << 30


if __name__ == "__main__":
    main()
