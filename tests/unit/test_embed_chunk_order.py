"""How the embed job keeps chunks in flight (`jobs.faces.schedule.embedded_in_order`): results in chunk order,
the next chunk started by whichever chunk finishes, a bound on what waits, and errors in their turn.

Fake chunks coordinate through events, each wait with a generous ceiling: no test depends on timing
except where a test checks that something does not start: a wrong implementation gets two seconds to
show itself there."""

from __future__ import annotations

import threading

import pytest

from jobs.faces.schedule import embedded_in_order

CEILING_S = 60


def test_a_chunk_finishing_first_starts_the_next_while_an_earlier_one_runs() -> None:
    # Spark may run chunk 1's job before chunk 0's: chunk 2 must start then, not once chunk 0 is done.
    chunk_2_started = threading.Event()
    saw_chunk_2: list[bool] = []

    def embed_chunk(number: int) -> int:
        if number == 0:
            saw_chunk_2.append(chunk_2_started.wait(CEILING_S))
        if number == 2:
            chunk_2_started.set()
        return number

    assert list(embedded_in_order(4, embed_chunk)) == [0, 1, 2, 3]
    assert saw_chunk_2 == [True], "chunk 2 waited for chunk 0 although chunk 1 had finished"


def test_at_most_one_finished_chunk_waits_beyond_those_in_flight() -> None:
    chunk_2_done, chunk_3_started = threading.Event(), threading.Event()
    started: list[int] = []
    started_while_0_ran: list[bool] = []

    def embed_chunk(number: int) -> int:
        started.append(number)
        if number == 0:
            assert chunk_2_done.wait(CEILING_S)
            started_while_0_ran.append(chunk_3_started.wait(2))  # 0 running, 1 and 2 done: 3 must wait
        if number == 3:
            chunk_3_started.set()
        return number

    def chunk_2_finishing(number: int) -> int:
        result = embed_chunk(number)
        if number == 2:
            chunk_2_done.set()
        return result

    assert list(embedded_in_order(5, chunk_2_finishing)) == [0, 1, 2, 3, 4]
    assert started_while_0_ran == [False], f"started while chunk 0 ran: {started}"
    assert sorted(started) == [0, 1, 2, 3, 4]


def test_a_failed_chunk_stops_new_work_and_raises_after_the_chunks_before_it() -> None:
    chunk_1_failing, chunk_3_started = threading.Event(), threading.Event()
    started: list[int] = []

    def embed_chunk(number: int) -> int:
        started.append(number)
        if number == 3:
            chunk_3_started.set()
        if number == 0:
            assert chunk_1_failing.wait(CEILING_S)
        if number == 1:
            chunk_1_failing.set()
            raise RuntimeError("chunk 1 broke")
        return number

    results = embedded_in_order(6, embed_chunk)
    assert next(results) == 0  # the good chunk before the failure is still handed over (and committed)
    assert not chunk_3_started.wait(2), f"new chunks started after chunk 1 failed: {started}"
    with pytest.raises(RuntimeError, match="chunk 1 broke"):
        next(results)
    # Chunk 0 may finish in the instant between chunk 1's event and its error reaching its future, and
    # start chunk 2; once the failure is seen nothing starts: chunk 2's end starts no chunk 3.
    assert sorted(started) in ([0, 1], [0, 1, 2])


def test_one_chunk_and_no_chunks() -> None:
    assert list(embedded_in_order(1, lambda number: number)) == [0]
    assert list(embedded_in_order(0, lambda number: number)) == []
