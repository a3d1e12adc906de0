"""TensorBoard event files for a job's scalars, written with tensorboardX's record writer.

One file per attempt: the version record, then one `Event{wall_time, step, summary{value
{tag, simple_value}}}` per scalar, all TensorBoard needs for its scalar charts. Written
synchronously (tensorboardX's `SummaryWriter` queues events for a background thread), so
every row is on disk once `add_scalars` returns, even if the trainer is killed next.

`StoreEvents` puts the file in the artifact store: in place in a local store; with a remote
one, written in a local folder and uploaded (whole, replacing the object) at most every
UPLOAD_SECONDS, at each checkpoint and at the end.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from tensorboardX import RecordWriter
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.summary_pb2 import Summary

from shared.infra.storage import ArtifactStore, StoreError

UPLOAD_SECONDS = 15.0


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


class StoreEvents:
    """An attempt's event file under the store's folder `prefix` (`jobs/<id>/tensorboard/
    attempt-<n>`). A failed upload is reported on stderr, never raised: the next one catches
    up, and training goes on."""

    def __init__(self, store: ArtifactStore, prefix: str) -> None:
        self.store, self.prefix = store, prefix
        folder = store.local_path(prefix)
        self.scratch: Path | None = None
        if folder is None:  # a remote store: write here, upload copies
            self.scratch = Path(tempfile.mkdtemp(prefix="seqtrain-tensorboard-"))
            folder = self.scratch
        self.writer = EventWriter(folder)
        self.key = f"{prefix}/{self.writer.path.name}"
        self.last_upload = 0.0
        self.uploaded_size = -1
        self._upload: threading.Thread | None = None

    def add_scalars(self, rows: Iterable[tuple[str, int, float]]) -> None:
        self.writer.add_scalars(rows)

    def sync(self, force: bool = False) -> None:
        """Upload the file if it changed: in the background at most every UPLOAD_SECONDS, or
        now and waited for with `force` (a checkpoint, the end)."""
        if self.scratch is None:
            return
        busy = self._upload is not None and self._upload.is_alive()
        if not force and (busy or time.monotonic() - self.last_upload < UPLOAD_SECONDS):
            return
        if self._upload is not None:
            self._upload.join()
        size = self.writer.path.stat().st_size
        if size == self.uploaded_size:
            return
        try:
            staging = self.store.staging_path(self.key)
            shutil.copyfile(self.writer.path, staging)
        except OSError as exc:
            print(f"TensorBoard upload of {self.key} failed: {exc}", file=sys.stderr, flush=True)
            return
        self.last_upload = time.monotonic()
        if force:
            self._send(staging, size)
        else:
            self._upload = threading.Thread(target=self._send, args=(staging, size), daemon=True)
            self._upload.start()

    def close(self) -> None:
        """Close the file, upload it a last time and remove the local copy."""
        self.writer.close()
        if self.scratch is not None:
            self.sync(force=True)
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _send(self, staging: Path, size: int) -> None:
        try:
            self.store.commit(staging, self.key)
            self.uploaded_size = size
        except (StoreError, OSError) as exc:
            print(f"TensorBoard upload of {self.key} failed: {exc}", file=sys.stderr, flush=True)
        finally:
            staging.unlink(missing_ok=True)
