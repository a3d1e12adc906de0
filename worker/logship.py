"""Ship a trainer's log from the worker's disk when the API cannot read that disk (an `s3://`
artifact store, workers on other machines).

The trainer writes its output to a local file; a `LogShipper` thread follows it:

- every SHIP_SECONDS it appends the new bytes to the attempt's Redis stream
  (`shared.protocol.log_stream_key`) in chunks of at most CHUNK_BYTES, each entry's ID
  `{offset + 1}-0` so that entries are ordered by byte offset, its fields `offset` and `data`:
  the API serves a running attempt's tail from there within about a second;
- every UPLOAD_SECONDS, and once more when the attempt ends, it uploads the whole file to the
  store under `log_key` (a staged copy, committed: the object is replaced atomically). The
  archive then serves everything it holds, and the stream keeps only what lies past the
  archive before the last one; at the end it expires.

`trainer_log` picks the file a trainer writes (the log itself in a local store, where none of
this is needed) and starts the shipper; `finish_log` ends it before the supervisor records the
attempt's end, so that an attempt seen ended has its whole log in the store.

Neither the store nor Redis failing ever fails the job: the shipper logs a line to the
worker's log and goes on (the next tick sends what was missed; the final upload is retried).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from shared.infra.storage import ArtifactStore, StoreError, open_store
from shared.protocol import log_key, log_stream_key
from shared.settings import Settings

log = logging.getLogger(__name__)

SHIP_SECONDS = 1.0
UPLOAD_SECONDS = 15.0
CHUNK_BYTES = 64 * 1024
# At most this much is read and sent per tick (a burst of output catches up over ticks).
TICK_BYTES = 4 << 20
# How long the stream outlives its attempt: the archive has everything once uploaded.
EXPIRE_SECONDS = 3600
EXPIRE_UNARCHIVED_SECONDS = 24 * 3600
FINAL_UPLOAD_TRIES = 3
# Periodic uploads give up quickly (the final one waits out the store's full retries).
QUICK_RETRY_SECONDS = 3.0


class LogShipper:
    """Follows `path` (the trainer's local log) into the Redis stream `stream` and the store's
    `key`. `start()` it, and `finish()` it once the trainer has exited."""

    def __init__(
        self,
        store: ArtifactStore,
        redis_url: str,
        path: Path,
        key: str,
        stream: str,
        quick_store: ArtifactStore | None = None,
        ship_seconds: float = SHIP_SECONDS,
        upload_seconds: float = UPLOAD_SECONDS,
    ) -> None:
        self.store, self.quick_store = store, quick_store or store
        self.path, self.key, self.stream = path, key, stream
        self.ship_seconds, self.upload_seconds = ship_seconds, upload_seconds
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.shipped = 0  # bytes of the file in the stream
        self.archived: list[int] = []  # sizes of the uploads so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"log-ship {key}", daemon=True)
        self._failing: set[str] = set()  # what is failing now (logged once per outage)

    @classmethod
    def for_settings(
        cls, settings: Settings, store: ArtifactStore, path: Path, key: str, stream: str
    ) -> LogShipper:
        quick = dataclasses.replace(
            settings, store_retry_seconds=min(settings.store_retry_seconds, QUICK_RETRY_SECONDS)
        )
        return cls(store, settings.redis_url, path, key, stream, quick_store=open_store(quick))

    def start(self) -> LogShipper:
        """Start following the file, from an empty stream (a new attempt has no entries)."""
        self._redis("reset", lambda: self.redis.delete(self.stream))
        self._thread.start()
        return self

    def finish(self) -> bool:
        """Ship the rest, upload the final archive (retried), expire the stream; whether the
        archive now holds the whole log. Call it once the trainer has exited."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        while self.ship():
            pass
        archived = False
        for attempt in range(1, FINAL_UPLOAD_TRIES + 1):
            if self.upload(self.store) is not None:
                archived = True
                break
            if attempt < FINAL_UPLOAD_TRIES:
                time.sleep(attempt)
        if not archived:
            log.error("%s: the final log upload failed; the live stream keeps it a day", self.key)
        seconds = EXPIRE_SECONDS if archived else EXPIRE_UNARCHIVED_SECONDS
        self._redis("expiry", lambda: self.redis.expire(self.stream, seconds))
        self.redis.close()
        return archived

    def _run(self) -> None:
        next_upload = time.monotonic()  # at once: the attempt's archive exists from the start
        while True:
            self.ship()
            if time.monotonic() >= next_upload and self._grown():
                if self.upload(self.quick_store) is not None:
                    self._trim()
                next_upload = time.monotonic() + self.upload_seconds
            if self._stop.wait(self.ship_seconds):
                return

    def _grown(self) -> bool:
        """Whether the file differs in size from the last archive (or none was made yet)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        return not self.archived or size != self.archived[-1]

    def ship(self) -> int:
        """Append the file's new bytes (up to TICK_BYTES) to the stream; the bytes sent."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.shipped)
                data = handle.read(TICK_BYTES)
        except FileNotFoundError:
            return 0
        if not data:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(data), CHUNK_BYTES):
            offset = self.shipped + start
            chunk = data[start : start + CHUNK_BYTES]
            pipe.xadd(self.stream, {"offset": offset, "data": chunk}, id=f"{offset + 1}-0")
        pipe.expire(self.stream, EXPIRE_UNARCHIVED_SECONDS)  # a crashed worker's stream goes too
        try:
            pipe.execute()
        except redis.ResponseError:
            # Some entries were added before (an answer lost): go on from the stream's end.
            return self._resync()
        except redis.RedisError as exc:
            self._trouble("redis", f"live log stream unavailable ({exc}); will retry")
            return 0
        self._recovered("redis")
        self.shipped += len(data)
        return len(data)

    def _resync(self) -> int:
        try:
            last: Any = self.redis.xrevrange(self.stream, count=1)
        except redis.RedisError as exc:
            self._trouble("redis", f"live log stream unavailable ({exc}); will retry")
            return 0
        if not last:
            return 0
        fields = last[0][1]
        end = int(fields[b"offset"]) + len(fields[b"data"])
        sent, self.shipped = end - self.shipped, max(self.shipped, end)
        return max(0, sent)

    def upload(self, store: ArtifactStore) -> int | None:
        """Upload a copy of the whole file as the archive; its size, None when it failed."""
        try:
            staging = store.staging_path(self.key)
            if self.path.exists():
                shutil.copyfile(self.path, staging)
            else:
                staging.write_bytes(b"")
            size, _ = store.commit(staging, self.key)
        except (StoreError, OSError) as exc:
            self._trouble("store", f"log upload failed ({exc}); will retry")
            return None
        self._recovered("store")
        self.archived.append(size)
        return size

    def _trim(self) -> None:
        """Drop stream entries that end before the archive before the last one (a reader that
        saw that archive's size finds what follows it still in the stream)."""
        if len(self.archived) < 2:
            return
        # An entry holding byte `size` starts at most CHUNK_BYTES - 1 before it.
        keep_from = self.archived[-2] - CHUNK_BYTES + 1
        if keep_from > 1:
            self._redis(
                "trim",
                lambda: self.redis.xtrim(self.stream, minid=keep_from + 1, approximate=False),
            )

    def _redis(self, what: str, call: Callable[[], object]) -> None:
        try:
            call()
        except redis.RedisError as exc:
            log.warning("%s: live log stream %s failed: %s", self.key, what, exc)

    def _trouble(self, what: str, message: str) -> None:
        if what not in self._failing:
            self._failing.add(what)
            log.warning("%s: %s", self.key, message)

    def _recovered(self, what: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            name = "the live log stream" if what == "redis" else "the artifact store"
            log.warning("%s: %s is back", self.key, name)


def trainer_log(
    settings: Settings, store: ArtifactStore, job_id: int, attempt: int, node_rank: int
) -> tuple[Path, LogShipper | None]:
    """Where a trainer writes its output: the log's own file in a local store; else a file in
    this machine's cache that a started `LogShipper` follows."""
    key = log_key(job_id, attempt, node_rank)
    path = store.local_path(key)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, None
    path = Path(settings.cache_dir, "logs", key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # a fresh attempt: nothing from an earlier one with the same key
    stream = log_stream_key(job_id, attempt, node_rank)
    return path, LogShipper.for_settings(settings, store, path, key, stream).start()


def finish_log(
    shipper: LogShipper | None,
    path: Path,
    renew: Callable[[], None] | None = None,
    renew_seconds: float = 5.0,
) -> None:
    """Once the trainer has exited, with a remote store: the final upload, calling `renew`
    (the attempt's lease) every `renew_seconds` while it waits on the store; the local copy
    goes once the archive holds it all. Never raises: the log never fails the job."""
    if shipper is None:
        return
    done = threading.Event()
    if renew is not None:

        def keep_renewing() -> None:
            while not done.wait(renew_seconds):
                renew()

        threading.Thread(target=keep_renewing, name="log-ship lease", daemon=True).start()
    try:
        archived = shipper.finish()
    except Exception:
        log.exception("shipping the trainer log %s failed", path)
        return
    finally:
        done.set()
    if archived:
        path.unlink(missing_ok=True)
