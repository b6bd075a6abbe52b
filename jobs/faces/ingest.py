"""The embed job: plan on the driver, workers on executors (they embed and write the rows' Parquet
files), one Delta commit per chunk of files.

Chunks make long runs resumable: each chunk's rows are committed atomically, so a run killed midway
keeps every finished chunk, and the rerun skips those images by content id. A commit adds only face_ids
the table does not hold yet (`jobs.faces.commit`), so nothing is ever duplicated, whatever was
committed before.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pyspark.errors import AnalysisException

from jobs.common.delta import driver_snapshot, latest_version, only_created
from jobs.common.erasures import read_register
from jobs.common.errors import UserError
from jobs.common.results import EmbedResult
from jobs.common.runs import RunRecord, run_job
from jobs.common.spark import local_frame
from jobs.common.timing import Phases
from jobs.faces.accumulators import MaxParam
from jobs.faces.chunks import Counts, Embedded, Ledger, collect_written
from jobs.faces.commit import Committer
from jobs.faces.config import EmbedConfig
from jobs.faces.files import WRITTEN_DDL
from jobs.faces.known import HeldImages, HeldInSpark, HeldOnDriver, held_images
from jobs.faces.labels import Labeller, load_label_table
from jobs.faces.plan import cut_tasks, list_inputs, source_prefix
from jobs.faces.refs import InputRef
from jobs.faces.rows import RowContext
from jobs.faces.schedule import Progress, embedded_in_order
from jobs.faces.table import FACES_COLUMNS, collects_personal_stats, ensure_faces_table
from jobs.faces.warmup import Warmup
from jobs.faces.worker import (
    TASK_COLUMNS,
    EmbedContext,
    image_ids,
    make_hash_runner,
    make_table_runner,
    make_task_runner,
    task_table,
)
from jobs.models.cache import PipelineRef
from jobs.models.pack import load_pack

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from jobs.models.pack import Pack

log = logging.getLogger(__name__)


def run_embed(config: EmbedConfig, spark: SparkSession | None = None) -> EmbedResult:
    """Embed the configured input into the faces table; the run's row goes to the runs table (ok or
    failed) and the summary (counts, rates, `timings_s`) is returned."""
    params = config.embed.model_dump(mode="json")
    return run_job("embed", config, spark, params, lambda spark, r, phases: _run(config, spark, r, phases), EmbedResult)


def _run(config: EmbedConfig, spark: SparkSession, record: RunRecord, phases: Phases) -> dict[str, Any]:
    warmup = None
    try:
        with phases.phase("plan"):
            pack = load_pack(config.resolved_pack_dir())
            pipeline = _pipeline_ref(config, pack)
            refs = list_inputs(config.embed.input, spark) if config.embed.input.kind != "table" else []
            if config.embed.warmup and (refs or config.embed.input.kind == "table"):
                warmup = Warmup(spark, pipeline)
        return _embed(config, spark, record, phases, pack, pipeline, refs)
    finally:
        if warmup is not None:
            warmup.cancel()


def _embed(
    config: EmbedConfig,
    spark: SparkSession,
    record: RunRecord,
    phases: Phases,
    pack: Pack,
    pipeline: PipelineRef,
    refs: list[InputRef],
) -> dict[str, Any]:
    table_path = config.faces_table_path()
    # Everything that can refuse the input (labels table included) runs before the table is touched:
    # a refused run leaves no new table version behind.
    context = _worker_context(config, spark, pack, pipeline, record.run_id)
    with phases.phase("prepare_table"):
        start_version, fresh, held = _prepare_table(spark, config, table_path, pack.model_id)
    searched_by = "driver" if isinstance(held, HeldOnDriver) else "spark" if held is not None else None
    log.info(
        "faces table %s v%d: %s",
        table_path,
        start_version,
        f"has images (searched by {searched_by})" if held is not None else "no images yet",
    )
    record.params["model_id"] = pack.model_id
    record.add_input("archive", config.embed.input.path, None)
    record.add_input("faces_at_start", table_path, start_version)
    counts = Counts()
    with phases.phase("embed_and_commit", count=len(refs) or None, unit="files"):
        work_started = time.perf_counter()
        ledger = Ledger(
            table_path,
            start_version,
            held,
            erasures_table=config.erasures_table_path(),
            model_id=pack.model_id,
            run_id=record.run_id,
            source_prefix=source_prefix(config.embed.input),
            register=context.rows.register,
        )
        with Committer(spark, ledger, counts, phases) as committer:
            if config.embed.input.kind == "table":
                committer.submit(_embed_table(spark, config, context, held, phases))
            else:
                _embed_files(spark, config, context, refs, fresh, held, committer, phases)
        elapsed = time.perf_counter() - work_started
    with phases.phase("summary"):
        summary = _summary(spark, pack.model_id, record.run_id, ledger, counts, elapsed)
    summary["python_worker_peak_rss_mb"] = round(context.peak_rss.value, 1)
    # 0 when the warm-up had every Python worker ready (jobs.faces.warmup); else the tasks that built one
    summary["pipelines_built_by_tasks"] = int(context.built_in_tasks.value)
    summary["known_searched_by"] = searched_by
    record.add_output("faces", table_path, summary["outputs"]["faces_table_version"])
    record.counts = {k: v for k, v in summary.items() if isinstance(v, int)}
    record.counts.update({f"status_{k}": v for k, v in counts.by_status.items()})
    return summary


def _prepare_table(
    spark: SparkSession, config: EmbedConfig, table_path: str, model_id: str
) -> tuple[int, bool, HeldImages | None]:
    """The table's version at the start, whether it holds no rows yet, and how to find its known images.

    An existing table with every column is read by delta-rs here: a fresh JVM's first Delta read and the
    table check cost 5-20 s, most of an all-known run. Spark creates or upgrades a table."""
    snapshot = driver_snapshot(table_path)
    if snapshot is not None and snapshot.columns >= FACES_COLUMNS and not collects_personal_stats(snapshot.properties):
        start_version, fresh = snapshot.version, snapshot.files == 0
    else:
        snapshot = None
        ensure_faces_table(spark, table_path)
        start_version = latest_version(spark, table_path)
        # A table whose only commit is its creation holds no rows: nothing to look up (asking the table
        # itself, a count or DESCRIBE DETAIL, rebuilds its state: ~2 s).
        fresh = only_created(spark, table_path, start_version)
    # A table input's known images leave by an anti-join in Spark: that needs Spark's view of the table.
    on_driver = snapshot if config.embed.input.kind != "table" else None
    held = None if fresh else held_images(spark, table_path, start_version, model_id, on_driver)
    return start_version, fresh, held


def _embed_files(
    spark: SparkSession,
    config: EmbedConfig,
    context: EmbedContext,
    refs: list[InputRef],
    fresh: bool,
    held: HeldImages | None,
    committer: Committer,
    phases: Phases,
) -> None:
    """Embed a folder's or tars' refs chunk by chunk, each chunk handed to the committer in order."""
    progress = Progress(len(refs))
    per_chunk = config.embed.files_per_commit
    chunks = [refs[s : s + per_chunk] for s in range(0, len(refs), per_chunk)]
    # Into a table that holds nothing, every later file is embedded: tasks shrink only toward the run's
    # end. Otherwise later chunks may turn out known, so each chunk ends short.
    files_after = [max(len(refs) - (n + 1) * per_chunk, 0) if fresh else 0 for n in range(len(chunks))]

    def embed_chunk(number: int) -> Embedded:
        return _embed_chunk(spark, chunks[number], files_after[number], config, context, held, phases)

    for number, embedded in enumerate(embedded_in_order(len(chunks), embed_chunk)):
        committer.submit(embedded)
        progress.report(len(chunks[number]), config.embed.progress_interval_s, force=number == 0)


def _pipeline_ref(config: EmbedConfig, pack: Pack) -> PipelineRef:
    settings = config.embed
    return PipelineRef(
        pack.location,
        pack.model_id,
        settings.threads_per_worker,
        settings.max_pixels,
        settings.retry_rotations,
        settings.quality,
    )


def _worker_context(
    config: EmbedConfig, spark: SparkSession, pack: Pack, pipeline: PipelineRef, run_id: str
) -> EmbedContext:
    """What every task needs, small enough to ship with the task (the pipeline is built on the worker).
    The erasure register goes with it as digests: an erased image is a status row, never embedded."""
    labels = config.embed.labels
    return EmbedContext(
        pipeline=pipeline,
        rows=RowContext(
            model_id=pack.model_id,
            run_id=run_id,
            labeller=Labeller(
                labels.subject_from_path,
                labels.attributes_from_name,
                load_label_table(spark, labels.table) if labels.table else None,
            ),
            embedded_at=dt.datetime.now(dt.UTC),
            register=read_register(config.erasures_table_path(), pack.model_id),
        ),
        batch_images=config.embed.batch_images,
        max_file_bytes=config.embed.input.max_file_bytes,
        peak_rss=spark.sparkContext.accumulator(0.0, MaxParam()),
        built_in_tasks=spark.sparkContext.accumulator(0),
    )


def _embed_chunk(
    spark: SparkSession,
    chunk: list[InputRef],
    files_after: int,
    config: EmbedConfig,
    context: EmbedContext,
    held: HeldImages | None,
    phases: Phases,
) -> Embedded:
    """One chunk's new rows, embedded and cached (the table's images left out by a first, cheap pass)."""
    sc = spark.sparkContext
    todo, skipped = chunk, 0
    if held is not None:
        with phases.phase("find_known", count=len(chunk), unit="files"):
            id_at = _image_ids(spark, chunk, context.max_file_bytes, config.driver_hash_max_files())
            known = held.known_among(set(id_at.values()))
            # Unreadable files stay: they become status rows.
            todo = [ref for position, ref in enumerate(chunk) if id_at.get(position) not in known]
            skipped = len(chunk) - len(todo)
    if not todo:  # the table holds every image of this chunk: nothing to embed, nothing to commit
        return Embedded({}, [], len(chunk), skipped)
    checked_ids = None if held is None else set(id_at.values()) - known
    tasks = cut_tasks(todo, config.embed.files_per_task, slots=sc.defaultParallelism, queued_after=files_after)
    runner = make_task_runner(context, config.faces_table_path())
    written = _task_frame(spark, tasks).mapInArrow(runner, WRITTEN_DDL)
    return collect_written(written, phases, files_seen=len(chunk), skipped=skipped, checked_ids=checked_ids)


HASH_DDL = "position INT, image_id STRING"


def _image_ids(
    spark: SparkSession, chunk: list[InputRef], max_file_bytes: int, driver_max_files: int
) -> dict[int, str]:
    """Each readable file's content id, by its position in the chunk (one chunk's: bounded). A chunk of
    at most `driver_max_files` files is hashed here, with no Spark job (a fresh JVM's first Python job
    costs seconds); a larger one in a few big tasks (two per core), not one per embedding task."""
    if len(chunk) <= driver_max_files:
        return image_ids(chunk, max_file_bytes)
    tasks = cut_tasks(chunk, -(-len(chunk) // (2 * spark.sparkContext.defaultParallelism)))
    hashes = _task_frame(spark, tasks).mapInArrow(make_hash_runner(max_file_bytes), HASH_DDL)
    return {row.position: row.image_id for row in hashes.collect()}


def _task_frame(spark: SparkSession, tasks: list[list[InputRef]]) -> DataFrame:
    """One row (and one Spark partition) per task, built in the JVM: a frame made from a Python RDD
    would run a second Python worker beside each task's own, only to hand it its input row."""
    from pyspark.sql import functions as F

    rows = local_frame(spark, task_table(tasks))
    slots = spark.range(0, len(tasks), 1, numPartitions=len(tasks)).withColumnRenamed("id", "task")
    return slots.join(F.broadcast(rows), "task").select(*TASK_COLUMNS)


def _embed_table(
    spark: SparkSession, config: EmbedConfig, context: EmbedContext, held: HeldImages | None, phases: Phases
) -> Embedded:
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
    skipped = 0
    if held is not None:  # known content is dropped by an anti-join on its sha256: no list anywhere
        assert isinstance(held, HeldInSpark)  # a table input's table is never searched on the driver (_run)
        hashed = frame.withColumn("image_id", F.sha2("content", 256))
        frame = hashed.join(held.image_ids().distinct(), "image_id", "left_anti").select("id", "content")
        skipped = files_seen - frame.count()
    runner = make_table_runner(context, f"{settings.path}#", config.faces_table_path())
    return collect_written(frame.mapInArrow(runner, WRITTEN_DDL), phases, files_seen=files_seen, skipped=skipped)


def _summary(spark: SparkSession, model_id: str, run_id: str, ledger: Ledger, counts: Counts, elapsed: float) -> dict:
    table_path = ledger.table_path
    if ledger.merge_reason is None:  # every commit was this run's own: the last one is the version to read
        version = max(ledger.own_versions, default=ledger.start_version)
    else:
        version = latest_version(spark, table_path)
    accounted = counts.files_skipped_known + counts.files_processed
    if accounted != counts.files_seen:
        raise RuntimeError(f"{counts.files_seen} files seen but {accounted} accounted for: a bug, please report it")
    return {
        "model_id": model_id,
        **{k: v for k, v in asdict(counts).items()},
        "images_per_s": round(counts.files_processed / max(elapsed, 1e-9), 2),
        "faces_per_s": round(counts.faces / max(elapsed, 1e-9), 2),
        "elapsed_s": round(elapsed, 1),
        "images_erased_at_commit": ledger.images_erased_at_commit,
        "outputs": {"faces_table": table_path, "faces_table_version": int(version)},
    }
