"""Python workers started, and their face pipelines built, while the driver plans.

A scheduled run is a fresh process (a new JVM, as every `spark-submit` is). Its first embedding tasks
would also pay for starting Spark's Python workers, importing the pipeline's libraries, building the
ONNX sessions and their first inference, and the JVM's first Arrow job, with the driver idle meanwhile.
A warm-up job of one task per slot does that while the driver lists the input and reads the table: Spark
reuses the Python workers (`spark.python.worker.reuse`, its default) and each keeps its pipeline
(`jobs.models.cache`), so the first real task finds both ready. It runs in its own thread and pool and
never fails a run: an error here is logged, and the real tasks meet (and report) the same fault.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from jobs.models.cache import PipelineRef

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
JOB_GROUP = "lineup-warmup"
POOL = "warmup"


class Warmup:
    """The warm-up job, running in a daemon thread from construction until done or cancelled."""

    def __init__(self, spark: SparkSession, pipeline: PipelineRef) -> None:
        self._spark = spark
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pipeline,), name=JOB_GROUP, daemon=True)
        self._thread.start()

    def _run(self, pipeline: PipelineRef) -> None:
        try:
            sc = self._spark.sparkContext
            sc.setLocalProperty("spark.scheduler.pool", POOL)  # thread-local: the run's own jobs keep theirs
            sc.setJobGroup(JOB_GROUP, "start Python workers and build their face pipelines", interruptOnCancel=False)
            slots = sc.defaultParallelism
            ready = self._spark.range(0, slots, 1, numPartitions=slots).mapInArrow(_warm(pipeline), "ready BIGINT")
            log.info("warm-up: %d Python workers ready", ready.count())
        except Exception as error:  # noqa: BLE001 - a warm-up never fails a run; the real tasks report faults
            log.info("warm-up stopped: %s", str(error).splitlines()[0] if str(error) else type(error).__name__)
        finally:
            self._done.set()

    def cancel(self) -> None:
        """Stop the warm-up if it still runs (a run with nothing to embed needs no workers)."""
        if not self._done.is_set():
            self._spark.sparkContext.cancelJobGroup(JOB_GROUP)


def _warm(pipeline: PipelineRef) -> Callable[[Iterator], Iterator]:
    def run(batches: Iterator) -> Iterator:
        pipeline.pipeline().warm()
        yield from batches

    return run
