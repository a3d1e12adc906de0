"""Group commit: concurrent callers share one flush.

A thread that hands in an item while no flush is running flushes at once, alone, so an idle
service adds no latency. Items that arrive while a flush is running wait; when it ends, the
first of them leads the next flush, which takes every item waiting by then (up to
`max_batch`). Under load each flush therefore carries the requests that arrived during the
previous one: one transaction and one Redis round trip for many submissions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("item", "ready", "lead", "result", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.ready = threading.Event()
        self.lead = False  # set (before `ready`) when this caller must run the next flush
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """`submit(item)` returns `flush(batch)`'s result for that item, or raises its error.

    `flush` receives the items in arrival order and returns one entry per item: the result,
    or an exception instance for that item alone. If `flush` itself raises, every item of
    the batch gets that error.
    """

    def __init__(
        self, flush: Callable[[list[T]], Sequence[R | BaseException]], max_batch: int = 64
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Slot[T, R]] = []
        self._flushing = False

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._waiting.append(slot)
            if not self._flushing:
                self._flushing = slot.lead = True
        if not slot.lead:
            slot.ready.wait()
        if slot.lead:
            self._lead()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._lock:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
        try:
            self._run(batch)
        finally:
            with self._lock:
                successor = self._waiting[0] if self._waiting else None
                if successor is None:
                    self._flushing = False
                else:
                    successor.lead = True
            if successor is not None:
                successor.ready.set()
            for slot in batch:
                slot.ready.set()

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = self._flush([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # every caller of the batch learns what happened
            for slot in batch:
                slot.error = exc
            return
        for slot, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                slot.error = result
            else:
                slot.result = result
