"""TensorBoard event files for a job's scalars, written with tensorboardX's record writer.

One file per attempt: the version record, then one `Event{wall_time, step, summary{value
{tag, simple_value}}}` per scalar, all TensorBoard needs for its scalar charts. Written
synchronously (tensorboardX's `SummaryWriter` queues events for a background thread), so
every row is on disk once `add_scalars` returns, even if the trainer is killed next.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from pathlib import Path

from tensorboardX import RecordWriter
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.summary_pb2 import Summary


class EventWriter:
    """Appends scalars to one event file in `folder`, named the way TensorBoard expects."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = folder / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.seqtrain"
        self._records = RecordWriter(str(self.path))
        self._write([Event(wall_time=now, file_version="brain.Event:2")])

    def add_scalars(self, rows: Iterable[tuple[str, int, float]]) -> None:
        """(tag, step, value) rows, appended and flushed together."""
        now = time.time()
        self._write(
            Event(
                wall_time=now,
                step=step,
                summary=Summary(value=[Summary.Value(tag=tag, simple_value=float(value))]),
            )
            for tag, step, value in rows
        )

    def close(self) -> None:
        self._records.close()

    def _write(self, events: Iterable[Event]) -> None:
        written = 0
        for event in events:
            self._records.write(event.SerializeToString())
            written += 1
        if written:
            self._records.flush()
