"""Query benchmark: Lineup's query job against what a Spark user has without it, MLlib's
BucketedRandomProjectionLSH, on the same face-shaped synthetic vectors. Prints one JSON line.

Data: a gallery of --gallery vectors (default 100,000) and --probes new samples of gallery identities
(default 10,000), 128-d, shaped like the default pack's LFW embeddings (bench/bench_index.py explains
how). Ground truth: exact top-10 by numpy GEMM.

Measured, wall-clock, SparkSession start excluded, on the same local Spark:
- lineup: the query job end to end (probe table -> index search -> matches, identities and runs tables
  written), its recall@10 against the truth; and its search kernel alone (the sharded exact index)
  in GFLOP/s beside numpy GEMM and FAISS IndexFlatIP on the same probes (the physical reference).
- mllib_join: BRP-LSH fit + approxSimilarityJoin(probes, gallery) with the distance threshold set to
  the 95th percentile of the true 10th-neighbour distance (the most favourable setting for it), then
  top-10 per probe; recall@10 on the same truth.
- mllib_ann: approxNearestNeighbors, one call per probe (its API), timed on --ann-probes probes.

- with --normalization: the query job again with a fair score normalization calibration (learnt on
  2,000 gallery faces, 20 clusters), and the plain run once more after it; throughput ratio.

Usage: .venv/bin/python -m bench.bench_query [--gallery 100000] [--probes 10000] [--lsh-tables 4]
       [--normalization] [--skip-mllib]
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

from bench.bench_index import _embed_lfw, cosine_stats, fit, measure_shape, synthesize
from jobs.common.config import load_config
from jobs.common.schema import FACES_ARROW
from jobs.common.spark import get_spark
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.query.config import QueryConfig
from jobs.query.job import run_query
from jobs.shards.build import exact_top_k, recall_at_k
from jobs.shards.files import load_index

log = logging.getLogger("bench_query")
K = 10


def write_faces_table(spark, path: Path, ids: np.ndarray, vectors: np.ndarray, subjects: np.ndarray) -> None:
    """A faces table with the real schema (Parquet by Arrow, converted in place to Delta)."""
    path.mkdir(parents=True)
    for part, start in enumerate(range(0, len(vectors), 100_000)):
        block, n = vectors[start : start + 100_000], min(100_000, len(vectors) - start)
        columns = {name: pa.nulls(n, FACES_ARROW.field(name).type) for name in FACES_ARROW.names}
        columns.update(
            face_id=pa.array(ids[start : start + n]),
            image_id=pa.array([f"img-{i}" for i in ids[start : start + n]]),
            embedding=pa.FixedSizeListArray.from_arrays(block.reshape(-1), block.shape[1]).cast(pa.list_(pa.float32())),
            model_id=pa.array(["synthetic"] * n),
            status=pa.array(["ok"] * n),
            face_index=pa.array(np.zeros(n, np.int32)),
            subject_id=pa.array([f"id{s}" for s in subjects[start : start + n]]),
        )
        pq.write_table(pa.table(columns, schema=FACES_ARROW), path / f"part-{part:05d}.parquet")
    spark.sql(f"CONVERT TO DELTA parquet.`{path}`")


def time_lineup(spark, scratch: Path, probe_ids, truth_ids, *extra: str) -> dict:
    config = load_config(
        QueryConfig,
        None,
        [
            f"spark.data_root={scratch / 'data'}",
            f"query.probes.faces_table={scratch / 'probes'}",
            f"query.index_dir={scratch / 'index'}",
            f"query.k={K}",
            *extra,
        ],
    )
    started = time.perf_counter()
    summary = dict(run_query(config, spark))
    wall = time.perf_counter() - started
    rows = (
        spark.read.format("delta")
        .load(summary["outputs"]["matches_table"])
        .where(f"run_id = '{summary['run_id']}'")
        .select("probe_face_id", "rank", "gallery_face_id")
        .toPandas()
    )
    found = _ranked(rows, probe_ids, "probe_face_id", "gallery_face_id", "rank")
    return {"wall_s": round(wall, 2), "recall_at_10": round(recall_at_k(found, truth_ids), 4), "summary": summary}


def fsn_calibration(scratch: Path, gallery: np.ndarray, subjects: np.ndarray, clusters: int = 20) -> str:
    """A normalizing calibration learnt on 2,000 gallery faces (their impostor pairs), as `calibrate` writes it."""
    from jobs.common.calibrations import CalibrationRecord, write_calibration
    from jobs.common.fmr import threshold_at_fmr
    from jobs.common.normalization import learn_fsn

    sample = np.random.default_rng(3).choice(len(gallery), 2_000, replace=False)
    vectors, labels = gallery[sample], subjects[sample]
    a, b = np.triu_indices(len(vectors), k=1)
    keep = labels[a] != labels[b]
    a, b = a[keep], b[keep]
    raw = np.einsum("ij,ij->i", vectors[a], vectors[b])
    fsn = learn_fsn(vectors, a, b, raw, clusters, 1e-3)
    normalized = fsn.normalize_pairs(vectors, a, b, raw)
    record = {
        "calibration_id": "cal-bench-fsn",
        "threshold": threshold_at_fmr(normalized, 1e-3),
        "raw_threshold": fsn.global_threshold,
        "model_id": "synthetic",
        "target_fmr": 1e-3,
        "measured_fmr": 1e-3,
        "impostor_pairs": int(len(raw)),
        "data": {"name": "2,000 synthetic gallery faces"},
        "normalization": fsn.as_record(),
    }
    write_calibration(scratch / "data", CalibrationRecord.model_validate(record))
    return record["calibration_id"]


def time_normalization(spark, scratch: Path, gallery, gallery_subjects, probe_ids, truth_ids, plain: dict) -> dict:
    """Query throughput with fair score normalization vs without (the plain run timed again after it)."""
    calibration = fsn_calibration(scratch, gallery, gallery_subjects)
    normalized = time_lineup(spark, scratch, probe_ids, truth_ids, f"query.threshold.calibration={calibration}")
    again = time_lineup(spark, scratch, probe_ids, truth_ids)
    plain_s = (plain["wall_s"] + again["wall_s"]) / 2
    return {
        "plain_wall_s": [plain["wall_s"], again["wall_s"]],
        "normalized_wall_s": normalized["wall_s"],
        "throughput_ratio_normalized_vs_plain": round(plain_s / normalized["wall_s"], 3),
        "normalized_rerank_candidates_per_probe": K * 4,
    }


def _ranked(frame, probe_ids, probe_col: str, gallery_col: str, order_col: str, ascending: bool = True):
    """(probes x K) ids from a long result frame, -1 where fewer than K were returned."""
    out = np.full((len(probe_ids), K), -1, np.int64)
    position = {int(p): i for i, p in enumerate(probe_ids)}
    frame = frame.sort_values([probe_col, order_col], ascending=[True, ascending])
    for probe, group in frame.groupby(probe_col):
        found = group[gallery_col].to_numpy()[:K]
        out[position[int(probe)], : len(found)] = found
    return out


def time_kernels(index_dir: Path, gallery: np.ndarray, probes: np.ndarray) -> dict:
    """Exact search kernels on the same probes: the job's sharded index, FAISS flat, numpy GEMM."""
    import faiss

    faiss.omp_set_num_threads(len(os.sched_getaffinity(0)))
    flops = 2.0 * len(probes) * len(gallery) * gallery.shape[1]
    index = load_index(index_dir)
    started = time.perf_counter()
    index.search(probes, K)
    sharded_s = time.perf_counter() - started
    flat = faiss.IndexFlatIP(gallery.shape[1])
    flat.add(gallery)
    started = time.perf_counter()
    flat.search(probes, K)
    flat_s = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, len(probes), 1000):  # the bare GEMM, in blocks that fit memory
        probes[start : start + 1000] @ gallery.T
    gemm_s = time.perf_counter() - started
    return {
        "lineup_sharded_flat_gflops": round(flops / sharded_s / 1e9, 1),
        "faiss_flat_gflops": round(flops / flat_s / 1e9, 1),
        "numpy_gemm_gflops": round(flops / gemm_s / 1e9, 1),
        "lineup_share_of_gemm": round(gemm_s / sharded_s, 3),
    }


def time_mllib(spark, gallery, gallery_ids, probes, probe_ids, truth_ids, truth_scores, args) -> dict:
    from pyspark.ml.feature import BucketedRandomProjectionLSH
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def frame(ids, vectors):
        table = pa.table(
            {
                "id": pa.array(ids),
                "v": pa.FixedSizeListArray.from_arrays(vectors.reshape(-1), vectors.shape[1]).cast(
                    pa.list_(pa.float64())
                ),
            }
        )
        return spark.createDataFrame(table).select("id", array_to_vector("v").alias("features"))

    gallery_frame = frame(gallery_ids, gallery).cache()
    probe_frame = frame(probe_ids, probes).cache()
    gallery_frame.count(), probe_frame.count()
    # Unit vectors: euclidean d = sqrt(2 - 2 cos). Threshold at the 95th percentile of the true 10th-NN distance.
    tenth = np.sqrt(np.clip(2 - 2 * truth_scores[:, K - 1], 0, None))
    threshold = float(np.percentile(tenth, 95))
    lsh = BucketedRandomProjectionLSH(
        inputCol="features",
        outputCol="hashes",
        bucketLength=args.bucket_length or threshold,
        numHashTables=args.lsh_tables,
    )
    started = time.perf_counter()
    model = lsh.fit(gallery_frame)
    joined = model.approxSimilarityJoin(probe_frame, gallery_frame, threshold, distCol="d").select(
        F.col("datasetA.id").alias("probe"), F.col("datasetB.id").alias("gallery"), "d"
    )
    order = Window.partitionBy("probe").orderBy(F.col("d").asc(), F.col("gallery").asc())
    top = joined.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= K).toPandas()
    join_s = time.perf_counter() - started
    found = _ranked(top, probe_ids, "probe", "gallery", "rank")
    report = {
        "join_wall_s": round(join_s, 2),
        "join_recall_at_10": round(recall_at_k(found, truth_ids), 4),
        "distance_threshold": round(threshold, 4),
        "bucket_length": round(args.bucket_length or threshold, 4),
        "hash_tables": args.lsh_tables,
    }
    ann_found, started = [], time.perf_counter()
    for vector in probes[: args.ann_probes]:
        from pyspark.ml.linalg import Vectors

        rows = (
            model.approxNearestNeighbors(gallery_frame, Vectors.dense(vector.astype(float)), K).select("id").collect()
        )
        ann_found.append([r.id for r in rows] + [-1] * (K - len(rows)))
    ann_s = time.perf_counter() - started
    report.update(
        ann_probes=args.ann_probes,
        ann_s_per_probe=round(ann_s / args.ann_probes, 3),
        ann_recall_at_10=round(recall_at_k(np.array(ann_found), truth_ids[: args.ann_probes]), 4),
    )
    gallery_frame.unpersist(), probe_frame.unpersist()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=10_000)
    parser.add_argument("--per-identity", type=int, default=5)
    parser.add_argument("--lsh-tables", type=int, default=4)
    parser.add_argument("--bucket-length", type=float, default=None, help="default: the distance threshold")
    parser.add_argument("--ann-probes", type=int, default=5)
    parser.add_argument("--lfw-faces-table", help="LFW faces table (default: embed it under $LINEUP_HOME/data/bench)")
    parser.add_argument("--normalization", action="store_true", help="also time queries with fair score normalization")
    parser.add_argument("--skip-mllib", action="store_true", help="leave out the MLlib and kernel comparisons")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    cores = len(os.sched_getaffinity(0))
    scratch = Path(tempfile.mkdtemp(prefix="bench-query-"))
    report: dict = {"bench": "query", "gallery": args.gallery, "probes": args.probes, "k": K}
    try:
        spark = get_spark(load_config(IndexConfig, None, [f"spark.master=local[{cores}]"]).spark)
        lfw_table = args.lfw_faces_table or _embed_lfw(spark)
        arrow = (
            spark.read.format("delta")
            .load(lfw_table)
            .where("status = 'ok' and subject_id is not null")
            .select("subject_id", "embedding")
            .toArrow()
        )
        lfw = (
            arrow.column("embedding")
            .combine_chunks()
            .flatten()
            .to_numpy()
            .astype(np.float32)
            .reshape(arrow.num_rows, -1)
        )
        labels = np.unique(arrow.column("subject_id").to_numpy(zero_copy_only=False), return_inverse=True)[1]
        shape = measure_shape(lfw, labels)
        params, stats = fit(cosine_stats(lfw, labels, np.random.default_rng(0)), shape, args.per_identity)
        report["synthetic_shape"] = {"a_between_a_within": params, **{k: round(v, 4) for k, v in stats.items()}}
        gallery, gallery_subjects = synthesize(args.gallery, args.per_identity, shape, *params, seed=42)
        others, other_subjects = synthesize(args.gallery, args.per_identity, shape, *params, seed=42, sample_seed=7)
        pick = np.random.default_rng(7).choice(len(others), args.probes, replace=False)
        probes, probe_subjects = others[pick], other_subjects[pick]
        gallery_ids = np.arange(1, len(gallery) + 1, dtype=np.int64) * 2654435761 % (2**62)
        probe_ids = np.arange(len(gallery) + 1, len(gallery) + 1 + len(probes), dtype=np.int64) * 2654435761 % (2**62)
        write_faces_table(spark, scratch / "gallery", gallery_ids, gallery, gallery_subjects)
        write_faces_table(spark, scratch / "probes", probe_ids, probes, probe_subjects)
        started = time.perf_counter()
        truth_scores, truth_ids = exact_top_k(gallery, gallery_ids, probes, K)
        report["numpy_exact_top10_s"] = round(time.perf_counter() - started, 2)
        index_config = load_config(
            IndexConfig, None, [f"index.faces_table={scratch / 'gallery'}", f"index.index_dir={scratch / 'index'}"]
        )
        index_summary = run_index(index_config, spark)
        report["index"] = {k: index_summary[k] for k in ("factory", "vectors", "shard_count", "recall_at_k")}
        lineup = time_lineup(spark, scratch, probe_ids, truth_ids)
        report["lineup"] = {k: v for k, v in lineup.items() if k != "summary"}
        report["lineup"]["job_elapsed_s"] = lineup["summary"]["elapsed_s"]
        if args.normalization:
            report["normalization"] = time_normalization(
                spark, scratch, gallery, gallery_subjects, probe_ids, truth_ids, lineup
            )
        if args.skip_mllib:
            return finish(report, cores)
        report["exact_kernels"] = time_kernels(scratch / "index", gallery, probes)
        report["mllib"] = time_mllib(spark, gallery, gallery_ids, probes, probe_ids, truth_ids, truth_scores, args)
        mllib = report["mllib"]
        report["speedup_vs_mllib_join"] = round(mllib["join_wall_s"] / lineup["wall_s"], 1)
        report["speedup_vs_mllib_ann_per_probe"] = round(mllib["ann_s_per_probe"] / (lineup["wall_s"] / args.probes), 1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    finish(report, cores)


def finish(report: dict, cores: int) -> None:
    report["measured_on"] = (
        f"{platform.node()} {platform.machine()}, {cores} CPUs, local[{cores}], load average {os.getloadavg()[0]:.2f}"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
