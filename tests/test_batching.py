"""api.batching.GroupCommit with real threads: who flushes, what a batch holds, and
where each error goes."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.batching import GroupCommit
from tests.conftest import wait_until


class Recorder:
    """A flush that doubles each item, records its batches, and can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def __call__(self, batch: list[int]) -> list[int | BaseException]:
        self.batches.append(list(batch))
        self.entered.set()
        assert self.hold.wait(10)
        return [ValueError(f"bad {n}") if n < 0 else n * 2 for n in batch]


def test_an_idle_caller_flushes_alone_and_at_once():
    flush = Recorder()
    group = GroupCommit(flush)
    started = time.perf_counter()
    assert group.submit(3) == 6
    assert time.perf_counter() - started < 0.5
    assert group.submit(4) == 8
    assert flush.batches == [[3], [4]]


def while_a_flush_runs(group: GroupCommit, flush: Recorder, first: int, rest: list[int]):
    """Submit `first` and hold its flush open until every item of `rest` is waiting, then
    let it go. Returns the futures, `first`'s before the others'."""
    flush.hold.clear()
    with ThreadPoolExecutor(len(rest) + 1) as pool:
        leader = pool.submit(group.submit, first)
        assert flush.entered.wait(5)  # the first flush is running, held open
        waiting = [pool.submit(group.submit, n) for n in rest]
        wait_until(lambda: len(group._waiting) == len(rest), 5, message="callers waiting")
        flush.hold.set()
        futures = [leader, *waiting]
        for future in futures:
            future.exception(5)
    return futures


def test_callers_arriving_during_a_flush_share_the_next_one():
    flush = Recorder()
    group = GroupCommit(flush)
    futures = while_a_flush_runs(group, flush, 0, list(range(1, 8)))
    assert [f.result() for f in futures] == [n * 2 for n in range(8)]
    # One flush for the first caller, one for all who came while it ran.
    assert flush.batches[0] == [0]
    assert sorted(flush.batches[1]) == list(range(1, 8)) and len(flush.batches) == 2


def test_max_batch_splits_the_waiting_callers():
    flush = Recorder()
    group = GroupCommit(flush, max_batch=3)
    futures = while_a_flush_runs(group, flush, 0, list(range(1, 8)))
    assert [f.result() for f in futures] == [n * 2 for n in range(8)]
    assert [len(b) for b in flush.batches] == [1, 3, 3, 1]


def test_an_items_own_error_reaches_only_its_caller():
    flush = Recorder()
    group = GroupCommit(flush)
    first, bad, good = while_a_flush_runs(group, flush, 1, [-1, 2])
    assert first.result() == 2 and good.result() == 4
    with pytest.raises(ValueError, match="bad -1"):
        bad.result()
    assert len(flush.batches) == 2


def test_a_failed_flush_fails_its_whole_batch_and_the_next_caller_leads():
    calls = []

    def flush(batch: list[int]) -> list[int]:
        calls.append(batch)
        if len(calls) == 1:
            raise ConnectionError("database unavailable")
        return batch

    group: GroupCommit[int, int] = GroupCommit(flush)
    with pytest.raises(ConnectionError, match="database unavailable"):
        group.submit(1)
    assert group.submit(2) == 2  # leadership was released after the failure
    assert calls == [[1], [2]]


def test_a_flush_that_loses_results_fails_loudly():
    group: GroupCommit[int, int] = GroupCommit(lambda batch: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        group.submit(1)


def test_many_threads_each_get_their_own_result():
    group: GroupCommit[int, int] = GroupCommit(lambda batch: [n + 1000 for n in batch])
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(group.submit, range(2000)))
    assert results == [n + 1000 for n in range(2000)]
    assert not group._waiting and not group._flushing


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(lambda batch: batch, max_batch=0)
