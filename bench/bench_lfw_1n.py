"""LFW as a 1:N search, through the real jobs (index, query, audit). Prints one JSON line.

Gallery: one image (the first by file name) of every identity with two or more images. Probes: the other
images of those identities (mated searches) and every image of the single-image identities (non-mated).
One face per image: the face nearest the image centre (LFW is about that person).
Threshold: the one at FMR 1e-3 on LFW's View 2 pairs.txt (3,000 impostor pairs; stored as a calibration
record and referenced by the query, as a user would), beside fixed thresholds in the scenario replay.

Usage: .venv/bin/python -m bench.bench_lfw_1n [--lfw-faces-table PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench.bench_index import _embed_lfw
from bench.common import data_root
from jobs.audit.config import AuditConfig
from jobs.audit.job import run_audit
from jobs.audit.lfw import embeddings_from_faces_table, read_lfw_pairs, score_pairs
from jobs.audit.metrics import operating_point
from jobs.common.calibrations import CalibrationRecord, write_calibration
from jobs.common.config import load_config
from jobs.common.spark import get_spark
from jobs.index.config import IndexConfig
from jobs.index.job import run_index
from jobs.query.config import QueryConfig
from jobs.query.job import run_query

log = logging.getLogger("bench_lfw_1n")


def split_gallery_probes(spark, table: str, out: Path) -> dict[str, int]:
    """Write gallery and probe faces tables (central face per image) and return their sizes."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    faces = spark.read.format("delta").load(table).where("status = 'ok' and subject_id is not null")
    distance = F.hypot(
        (F.col("bbox.x1") + F.col("bbox.x2")) / 2 - F.col("image_width") / 2,
        (F.col("bbox.y1") + F.col("bbox.y2")) / 2 - F.col("image_height") / 2,
    )
    central = (
        faces.withColumn("_d", distance)
        .withColumn("_n", F.row_number().over(Window.partitionBy("image_id").orderBy("_d", "face_index")))
        .where("_n = 1")
        .drop("_d", "_n")
    )
    by_subject = Window.partitionBy("subject_id")
    ordered = central.withColumn("_rank", F.row_number().over(by_subject.orderBy("source_path"))).withColumn(
        "_images", F.count("*").over(by_subject)
    )
    gallery = ordered.where("_images >= 2 and _rank = 1").drop("_rank", "_images")
    probes = ordered.where("not (_images >= 2 and _rank = 1)").drop("_rank", "_images")
    gallery.write.format("delta").save(str(out / "gallery"))
    probes.write.format("delta").save(str(out / "probes"))
    return {
        "gallery_faces": spark.read.format("delta").load(str(out / "gallery")).count(),
        "probe_faces": spark.read.format("delta").load(str(out / "probes")).count(),
    }


def pairs_calibration(spark, table: str, data_root_dir: Path, lfw_dir: Path, target: float) -> dict:
    embeddings, model_id, version = embeddings_from_faces_table(spark, table, None)
    scores, genuine, failed, _ = score_pairs(embeddings, read_lfw_pairs(lfw_dir / "pairs.txt"))
    keep = ~failed
    point = operating_point(scores[keep & genuine], scores[keep & ~genuine], target)
    record = {
        "calibration_id": f"cal-lfw-pairs-{target:g}",
        "threshold": point.threshold,
        "target_fmr": target,
        "measured_fmr": point.fmr,
        "measured_fnmr": point.fnmr,
        "false_matches": point.false_matches,
        "impostor_pairs": point.impostor_pairs,
        "genuine_pairs": point.genuine_pairs,
        "resolvable": point.resolvable,
        "model_id": model_id,
        "data": {"name": "LFW View 2 pairs.txt", "table": table, "version": version, "pairs_failed": int(failed.sum())},
        "method": "lowest threshold with FMR <= target (score >= threshold matches)",
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    write_calibration(data_root_dir, CalibrationRecord.model_validate(record))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw-faces-table", help="LFW faces table (default: embed it under $LINEUP_HOME/data/bench)")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    cores = len(os.sched_getaffinity(0))
    scratch = Path(tempfile.mkdtemp(prefix="bench-lfw-1n-"))
    report: dict = {"bench": "lfw_1n"}
    try:
        common = [f"spark.master=local[{cores}]", f"spark.data_root={scratch / 'data'}"]
        spark = get_spark(load_config(IndexConfig, None, common).spark)
        table = args.lfw_faces_table or _embed_lfw(spark)
        report.update(split_gallery_probes(spark, table, scratch))
        calibration = pairs_calibration(spark, table, scratch / "data", data_root() / "lfw", 1e-3)
        report["threshold"] = {k: calibration[k] for k in ("threshold", "target_fmr", "measured_fmr", "measured_fnmr")}
        report["threshold"]["measured_on"] = "LFW View 2 pairs.txt, 3,000 genuine + 3,000 impostor pairs"
        run_index(
            load_config(
                IndexConfig,
                None,
                [*common, f"index.faces_table={scratch / 'gallery'}", f"index.index_dir={scratch / 'index'}"],
            ),
            spark,
        )
        query = run_query(
            load_config(
                QueryConfig,
                None,
                [
                    *common,
                    f"query.probes.faces_table={scratch / 'probes'}",
                    f"query.index_dir={scratch / 'index'}",
                    f"query.k={args.k}",
                    f"query.threshold.calibration={calibration['calibration_id']}",
                ],
            ),
            spark,
        )
        report["query"] = {k: query[k] for k in ("probes_searched", "gallery_size", "threshold", "elapsed_s")}
        audit = run_audit(
            load_config(
                AuditConfig,
                None,
                [
                    *common,
                    f"audit.identification.matches_table={query['outputs']['matches_table']}",
                    f"audit.scenario_calibrations=[{calibration['calibration_id']}]",
                ],
            ),
            spark,
        )
        many = audit["one_to_n"]
        label = f"calibration {calibration['calibration_id']} (FMR 0.001)"
        at_threshold = [s for s in many["scenario"] if s["threshold_label"] == label]
        non_mated_above = sum(s["searches_with_false_match"] for s in at_threshold)
        report["one_to_n"] = {
            "gallery_size": many["gallery_size"],
            "gallery_subjects": many["gallery_subjects"],
            "mated_searches": many["mated_searches"],
            "non_mated_searches": many["non_mated_searches"],
            "rank_1_hit_rate": many["rank_1_hit_rate"],
            "rank_5_hit_rate": many.get("rank_5_hit_rate"),
            "rank_10_hit_rate": many.get("rank_10_hit_rate"),
            "non_mated_with_candidate_above_threshold": non_mated_above,
            "non_mated_share_above_threshold": round(non_mated_above / many["non_mated_searches"], 4),
            "fnir_at_fpir": many["fnir_at_fpir"],
            "scenario": [
                {k: s[k] for k in ("threshold_label", "threshold", "searches", "searches_with_false_match", "fpir")}
                for s in many["scenario"]
            ],
        }
        report["report_html"] = audit["outputs"]["report"]
        keep = Path(os.environ.get("LINEUP_BENCH_KEEP", "")) if os.environ.get("LINEUP_BENCH_KEEP") else None
        if keep:
            shutil.copy(audit["outputs"]["report"], keep)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["measured_on"] = f"{platform.node()} {platform.machine()}, {cores} CPUs, local[{cores}]"
    print(json.dumps(report, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


if __name__ == "__main__":
    main()
