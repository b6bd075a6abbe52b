"""Chunks in flight: the next chunk's Spark job is submitted while the current one's tasks run, so no core idles
through a chunk's last tasks; results come back in chunk order; progress is logged as chunks finish."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from jobs.faces.chunks import Embedded

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


CHUNKS_IN_FLIGHT = 2  # chunks whose Spark jobs are submitted at once: the next one's tasks queue behind


def embedded_in_order(
    chunks: int, embed_chunk: Callable[[int], Embedded], in_flight: int = CHUNKS_IN_FLIGHT
) -> Iterator[Embedded]:
    """Each chunk embedded, yielded in chunk order (commits land in that order), with `in_flight` chunks'
    Spark jobs submitted at all times, so no core idles through a chunk's last tasks and the next job's
    start: whichever chunk finishes starts the next one at once.

    The chunks' jobs reach Spark from separate threads, in either order, and the pool runs tasks in job
    order, so chunk 1 often finishes before chunk 0. Starting chunk 2 only once chunk 0 was done left a
    core idle for seconds (2.6 s of a 72 s run of 10,000 images). At most one finished chunk waits beyond
    those in flight; after a failed chunk nothing new starts, and its error is raised in its turn, once
    the chunks before it have been yielded (and committed)."""
    lock = threading.RLock()  # an already finished future runs its callback at once, in the submitting thread
    waiting: dict[int, Future] = {}  # submitted, not yielded yet
    submitted = 0
    stopped = False

    def failed(future: Future) -> bool:
        return future.done() and not future.cancelled() and future.exception() is not None

    def start_more(_finished: Future | None = None) -> None:
        nonlocal submitted
        with lock:
            while not stopped and submitted < chunks and len(waiting) <= in_flight:
                running = sum(not future.done() for future in waiting.values())
                if running >= in_flight or any(failed(future) for future in waiting.values()):
                    return
                number, submitted = submitted, submitted + 1
                waiting[number] = embedder.submit(embed_chunk, number)
                waiting[number].add_done_callback(start_more)

    with ThreadPoolExecutor(in_flight, thread_name_prefix="lineup-embed") as embedder:
        try:
            start_more()
            for number in range(chunks):
                with lock:
                    future = waiting[number]
                embedded = future.result()
                with lock:
                    del waiting[number]
                start_more()
                yield embedded
        finally:
            with lock:  # a failed (or abandoned) run does not start more work
                stopped = True
                for future in waiting.values():
                    future.cancel()
