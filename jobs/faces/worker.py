"""Executor side of the embed job: the mapInArrow runners and what each Python worker caches.

- `make_task_runner`: input rows `first INT, refs STRING` (one task's `InputRef`s as JSON, and the
  position of its first ref in the chunk). Reads each ref (`jobs.faces.read`) and embeds it
  (`jobs.faces.rows`): the driver has already left out the images the table holds. The task's rows go
  into one Parquet file in the table's folder (`jobs.faces.files`); the output rows (`WRITTEN_ARROW`)
  describe it for the driver's commit.
- `make_table_runner`: input rows `id STRING, content BINARY` (a table of image bytes); same output, a
  file per `ROWS_PER_FILE` rows of a partition.
- `make_hash_runner`: input rows `first INT, refs STRING`; output `position INT, image_id STRING` of
  each readable ref (the cheap first pass that finds which of a chunk's images the table already holds).
- Cached per Python worker process: one `FacePipeline` (ONNX sessions built here from the pack folder,
  never pickled from the driver), reused by every task the worker runs.
- Reported back through an accumulator: the workers' peak RSS.
"""

from __future__ import annotations

import json
import resource
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from jobs.common.ids import image_id_of
from jobs.common.schema import to_faces_batch
from jobs.faces.files import write_faces_file
from jobs.faces.read import read_refs, table_item
from jobs.faces.refs import InputRef
from jobs.faces.rows import RowContext, embed_loaded
from jobs.models.cache import PipelineRef


@dataclass(frozen=True)
class EmbedContext:
    """What every embedding task needs, small enough to ship with it (the pipeline is built on the worker;
    the erasure register travels inside `rows` as digests: an erased image is a status row, never embedded)."""

    pipeline: PipelineRef
    rows: RowContext
    batch_images: int
    max_file_bytes: int
    peak_rss: Any  # an accumulator (`MaxParam`): the largest Python worker's peak RSS, MB
    built_in_tasks: Any = None  # an accumulator (sum): embedding tasks that had to build their pipeline


def _pipeline(context: EmbedContext) -> Any:  # a FacePipeline
    """The worker's pipeline; counted when an embedding task (not a warm-up) had to build it."""
    if context.built_in_tasks is not None and not context.pipeline.built():
        context.built_in_tasks.add(1)
    return context.pipeline.pipeline()


def task_table(tasks: list[list[InputRef]]) -> Any:  # a pyarrow.Table
    """The tasks' input rows, one per task: `task` (its number), then what a runner reads (`TASK_COLUMNS`):
    `first` (the position of its first ref in the chunk) and `refs` (the refs as JSON)."""

    import pyarrow as pa

    firsts, payloads, first = [], [], 0
    for task in tasks:
        firsts.append(first)
        payloads.append(json.dumps([asdict(ref) for ref in task]))
        first += len(task)
    return pa.table(
        {
            "task": pa.array(range(len(tasks)), pa.int64()),
            "first": pa.array(firsts, pa.int32()),
            "refs": pa.array(payloads, pa.string()),
        }
    )


TASK_COLUMNS = ("first", "refs")


def _task_rows(batches: Iterator) -> Iterator[tuple[int, list[InputRef]]]:
    for batch in batches:
        for first, payload in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            yield first, [InputRef(**ref) for ref in json.loads(payload)]


def make_task_runner(context: EmbedContext, table_path: str) -> Callable[[Iterator], Iterator]:
    """mapInArrow over task rows (`TASK_COLUMNS`) -> one Delta add action per written faces file."""

    def run(batches: Iterator) -> Iterator:
        pipeline = _pipeline(context)
        for _, refs in _task_rows(batches):
            loaded = read_refs(refs, context.max_file_bytes)
            rows = list(embed_loaded(loaded, pipeline, context.rows, context.batch_images))
            context.peak_rss.add(_max_rss_mb())
            if rows:
                yield write_faces_file(table_path, to_faces_batch(rows))

    return run


def make_hash_runner(max_file_bytes: int) -> Callable[[Iterator], Iterator]:
    """The first pass over a chunk: output `position INT, image_id STRING` (content sha256) for every
    ref whose bytes can be read. Nothing is decoded and nothing is cached."""

    def run(batches: Iterator) -> Iterator:
        import pyarrow as pa

        for first, refs in _task_rows(batches):
            id_at = image_ids(refs, max_file_bytes)
            if id_at:
                positions = pa.array([first + offset for offset in id_at], pa.int32())
                ids = pa.array(list(id_at.values()), pa.string())
                yield pa.RecordBatch.from_pydict({"position": positions, "image_id": ids})

    return run


def image_ids(refs: list[InputRef], max_file_bytes: int) -> dict[int, str]:
    """Each readable ref's content id (sha256), by its position in `refs`. Nothing is decoded."""

    loaded = read_refs(refs, max_file_bytes)
    return {offset: image_id_of(item.data) for offset, item in enumerate(loaded) if item.data is not None}


ROWS_PER_FILE = 65536  # a table input's partition can be large: bound what one file (and memory) holds


def make_table_runner(context: EmbedContext, prefix: str, table_path: str) -> Callable[[Iterator], Iterator]:
    """Known content was already dropped by the job's anti-join, so every row here is embedded."""

    def run(batches: Iterator) -> Iterator:
        pipeline = _pipeline(context)
        rows: list[dict] = []
        for batch in batches:
            ids, contents = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            items = (table_item(prefix, str(i), c, context.max_file_bytes) for i, c in zip(ids, contents))
            rows.extend(embed_loaded(items, pipeline, context.rows, context.batch_images))
            if len(rows) >= ROWS_PER_FILE:
                yield write_faces_file(table_path, to_faces_batch(rows))
                rows = []
        if rows:
            yield write_faces_file(table_path, to_faces_batch(rows))
        context.peak_rss.add(_max_rss_mb())

    return run


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
