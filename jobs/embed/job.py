"""The embed job: plan on the driver, workers on executors, one Delta MERGE per chunk of files.

Chunks make long runs resumable: each chunk's rows are committed atomically, so a run killed midway
keeps every finished chunk, and the rerun skips those images by content id. The MERGE inserts only
face_ids the table does not hold yet, so nothing is ever duplicated, whatever was committed before.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.errors import AnalysisException

from jobs.common.commits import with_commit_retries
from jobs.common.delta import latest_version
from jobs.common.errors import UserError
from jobs.common.runs import RunRecord, append_run, run_job
from jobs.common.schema import FACES_DDL
from jobs.common.timing import Phases
from jobs.embed.config import EmbedConfig
from jobs.embed.known import KnownImages, held_image_ids, known_among
from jobs.embed.labels import Labeller, load_label_table
from jobs.embed.plan import InputRef, cut_tasks, list_inputs
from jobs.embed.table import ensure_faces_table
from jobs.embed.worker import MaxParam, make_hash_runner, make_table_runner, make_task_runner

log = logging.getLogger(__name__)


@dataclass
class Progress:
    files_total: int
    started: float = field(default_factory=time.perf_counter)
    files_done: int = 0
    last_log: float = 0.0

    def report(self, files: int, interval_s: float, force: bool = False) -> None:
        self.files_done += files
        now = time.perf_counter()
        if not force and now - self.last_log < interval_s:
            return
        self.last_log = now
        rate = self.files_done / max(now - self.started, 1e-9)
        remaining = (self.files_total - self.files_done) / rate if rate > 0 else float("inf")
        log.info(
            "embed progress: %d/%d files (%.1f%%), %.1f files/s, ETA %.0f s",
            self.files_done,
            self.files_total,
            100 * self.files_done / max(self.files_total, 1),
            rate,
            remaining,
        )


@dataclass
class Counts:
    files_seen: int = 0
    files_skipped_known: int = 0
    files_processed: int = 0
    duplicate_content_files: int = 0
    faces: int = 0
    rows_written: int = 0
    rows_already_present: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, other: dict[str, int], by_status: dict[str, int]) -> None:
        for key, value in other.items():
            setattr(self, key, getattr(self, key) + value)
        for status, value in by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + value


def run_embed(config: EmbedConfig, spark=None) -> dict[str, Any]:
    """Embed the configured input into the faces table; the run's row goes to the runs table (ok or
    failed) and the summary (counts, rates, `timings_s`) is returned."""
    params = config.embed.model_dump(mode="json")
    return run_job("embed", config, spark, params, lambda spark, r, phases: _run(config, spark, r, phases))


def _run(config: EmbedConfig, spark, record: RunRecord, phases: Phases) -> dict[str, Any]:
    from jobs.models.pack import load_pack

    with phases.phase("plan"):
        pack = load_pack(config.resolved_pack_dir())
        refs = list_inputs(config.embed.input, spark) if config.embed.input.kind != "table" else []
    table_path = config.faces_table_path()
    # Everything that can refuse the input (labels table included) runs before the table is touched:
    # a refused run leaves no new table version behind.
    context = _worker_context(config, spark, pack, record.run_id)
    with phases.phase("prepare_table"):
        ensure_faces_table(spark, table_path)
        start_version = latest_version(spark, table_path)
        held = held_image_ids(spark, table_path, start_version, pack.model_id)
        held = held if held.limit(1).count() else None  # a fresh table: nothing to look up
    log.info("faces table %s v%d: %s", table_path, start_version, "has images" if held else "no images yet")
    record.params["model_id"] = pack.model_id
    record.add_input("archive", config.embed.input.path, None)
    record.add_input("faces_at_start", table_path, start_version)
    counts = Counts()
    with phases.phase("embed_and_commit", count=len(refs) or None, unit="files"):
        work_started = time.perf_counter()
        if config.embed.input.kind == "table":
            _embed_table(spark, config, context, held, table_path, counts)
        else:
            progress = Progress(len(refs))
            for start in range(0, len(refs), config.embed.files_per_commit):
                chunk = refs[start : start + config.embed.files_per_commit]
                _embed_chunk(spark, chunk, config, context, held, table_path, counts)
                progress.report(len(chunk), config.embed.progress_interval_s, force=start == 0)
        elapsed = time.perf_counter() - work_started
    summary = _summary(spark, pack.model_id, record.run_id, table_path, counts, elapsed)
    summary["python_worker_peak_rss_mb"] = round(context["peak_rss"].value, 1)
    record.add_output("faces", table_path, summary["outputs"]["faces_table_version"])
    record.counts = {k: v for k, v in summary.items() if isinstance(v, int)}
    record.counts.update({f"status_{k}": v for k, v in counts.by_status.items()})
    runs_table = config.runs_table_path()
    summary["outputs"].update(runs_table=runs_table, runs_version=append_run(spark, runs_table, record, "ok"))
    return summary


def _worker_context(config: EmbedConfig, spark, pack, run_id: str) -> dict[str, Any]:
    """What every task needs, small enough to ship with the task (the pipeline is built on the worker)."""
    return {
        "pack_dir": pack.location,
        "model_id": pack.model_id,
        "run_id": run_id,
        "labeller": Labeller(
            config.embed.labels.subject_from_path,
            config.embed.labels.attributes_from_name,
            load_label_table(spark, config.embed.labels.table) if config.embed.labels.table else None,
        ),
        "embedded_at": dt.datetime.now(dt.UTC),
        "batch_images": config.embed.batch_images,
        "max_pixels": config.embed.max_pixels,
        "threads": config.embed.threads_per_worker,
        "max_file_bytes": config.embed.input.max_file_bytes,
        "peak_rss": spark.sparkContext.accumulator(0.0, MaxParam()),
    }


def _embed_chunk(spark, chunk: list[InputRef], config, context, held, table_path, counts: Counts) -> None:
    tasks = cut_tasks(chunk, config.embed.files_per_task)
    payload = [json.dumps([asdict(ref) for ref in task]) for task in tasks]
    rdd = spark.sparkContext.parallelize([(p,) for p in payload], numSlices=len(payload))
    task_frame = spark.createDataFrame(rdd, "refs STRING")
    known = KnownImages([])
    if held is not None:
        chunk_ids = task_frame.mapInArrow(make_hash_runner(context["max_file_bytes"]), "image_id STRING")
        known = known_among(held, chunk_ids)
    known_handle = spark.sparkContext.broadcast(known)
    skipped = spark.sparkContext.accumulator(0)
    runner = make_task_runner(context, known_handle, skipped, context["peak_rss"])
    rows = task_frame.mapInArrow(runner, FACES_DDL)
    _commit(spark, rows, table_path, counts, files_seen=len(chunk), skipped=skipped)


def _embed_table(spark, config, context, held, table_path, counts: Counts) -> None:
    from pyspark.sql import functions as F

    settings = config.embed.input
    try:
        source = spark.read.format(settings.table_format).load(settings.path)
    except AnalysisException as error:  # no such path, unreadable format, bad filter: the user's to fix
        raise UserError(
            f"embed.input.path {settings.path} is not a readable {settings.table_format} table: "
            f"{str(error).splitlines()[0]}"
        ) from None
    missing = [c for c in (settings.id_column, settings.bytes_column) if c not in source.columns]
    if missing:
        raise UserError(
            f"embed.input.path {settings.path} has no column(s) {missing}; set embed.input.id_column "
            f"and embed.input.bytes_column (columns: {source.columns})"
        )
    frame = source.select(
        source[settings.id_column].cast("string").alias("id"), source[settings.bytes_column].alias("content")
    )
    files_seen = frame.count()
    skipped = spark.sparkContext.accumulator(0)
    if held is not None:  # known content is dropped by an anti-join on its sha256: no list anywhere
        hashed = frame.withColumn("image_id", F.sha2("content", 256))
        frame = hashed.join(held.distinct(), "image_id", "left_anti").select("id", "content")
        skipped.add(files_seen - frame.count())
    runner = make_table_runner(context, context["peak_rss"], f"{settings.path}#")
    _commit(spark, frame.mapInArrow(runner, FACES_DDL), table_path, counts, files_seen=files_seen, skipped=skipped)


def _commit(spark, rows, table_path: str, counts: Counts, files_seen: int, skipped) -> None:
    from delta.tables import DeltaTable
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Computed once: the MERGE, the counts and the dedup must all see the same rows.
    rows = rows.persist(StorageLevel.DISK_ONLY)
    try:
        processed = rows.select("source_path", "source_path_raw").distinct().count()
        # Two files with the same bytes give the same face_ids: keep the first path in sorted order, so
        # a resumed run keeps exactly the row a clean run keeps.
        first_path = Window.partitionBy("face_id").orderBy("source_path")
        unique = rows.withColumn("_rank", F.row_number().over(first_path)).where("_rank = 1").drop("_rank")
        unique = unique.persist(StorageLevel.DISK_ONLY)
        unique_rows = unique.count()
        metrics = with_commit_retries(
            lambda: (
                DeltaTable.forPath(spark, table_path)
                .alias("t")
                .merge(unique.alias("s"), "t.face_id = s.face_id")
                .whenNotMatchedInsertAll()
                .execute()
            ),
            table_path,
        )
        first = metrics.first() if metrics is not None else None
        written = int(first["num_inserted_rows"]) if first is not None else 0
        # What the table now holds for these files: a copy of content committed by an earlier chunk
        # (or run) is not there under its own path, and is counted as a duplicate.
        held = spark.read.format("delta").load(table_path).select("face_id", "source_path")
        kept = unique.join(held, ["face_id", "source_path"], "left_semi")
        stats = kept.groupBy("status").agg(F.count("*").alias("rows")).collect()
        recorded_paths = kept.select("source_path", "source_path_raw").distinct().count()
        unique.unpersist()
    finally:
        rows.unpersist()
    by_status = {row.status: int(row.rows) for row in stats}
    counts.add(
        {
            "files_seen": files_seen,
            "files_skipped_known": skipped.value,
            "files_processed": processed,
            "duplicate_content_files": processed - recorded_paths,
            "faces": by_status.get("ok", 0),
            "rows_written": written,
            "rows_already_present": unique_rows - written,
        },
        by_status,
    )


def _summary(spark, model_id: str, run_id: str, table_path: str, counts: Counts, elapsed: float) -> dict:
    from delta.tables import DeltaTable

    version = DeltaTable.forPath(spark, table_path).history(1).collect()[0].version
    accounted = counts.files_skipped_known + counts.files_processed
    if accounted != counts.files_seen:
        raise RuntimeError(f"{counts.files_seen} files seen but {accounted} accounted for: a bug, please report it")
    return {
        "job": "embed",
        "run_id": run_id,
        "status": "ok",
        "model_id": model_id,
        **{k: v for k, v in asdict(counts).items()},
        "images_per_s": round(counts.files_processed / max(elapsed, 1e-9), 2),
        "faces_per_s": round(counts.faces / max(elapsed, 1e-9), 2),
        "elapsed_s": round(elapsed, 1),
        "outputs": {"faces_table": table_path, "faces_table_version": int(version)},
    }
