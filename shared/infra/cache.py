"""A bounded local cache of artifacts by content hash, for workers and API processes that
read from a store on another machine (an `s3://` bucket).

Two kinds of entry, each named by the sha256 its database row records:

- `files/<sha256>`: a verified copy of one object (a dataset, a checkpoint). `file` downloads
  it once; later callers, in this process or another, read the copy.
- `models/<sha256>`: a folder built once by a caller's function (a base model's unpacked
  archive, shared.hub.cache).

The first caller of an entry works under an exclusive `fcntl.flock` on `<sha256>.lock`
beside it; the entry appears by a rename, whole or not at all, and the callers that waited
reuse it. Every hit touches the entry's mtime; after an entry is added, the least recently
used others go until the entries fit in `max_bytes` (SEQTRAIN_CACHE_BYTES). An entry whose
lock is held (being built) is never removed. Hits, misses and evictions are counted in
`stats.json`, across every process that shares the folder.

For a store that is a local directory, read the store's file in place (`store.local_path`)
instead: a copy would only double the disk it takes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.infra.storage import ArtifactMissing

if TYPE_CHECKING:
    from shared.infra.storage import ArtifactStore
    from shared.settings import Settings

_SHA256 = re.compile(r"[0-9a-f]{64}")
_COUNTERS = ("hits", "misses", "evictions")


class ChecksumMismatch(ValueError):
    """An object's bytes are not the ones its database row records (changed or corrupted)."""


@dataclass(frozen=True)
class Fetched:
    """A cache entry and how it was obtained: `hit` (already here) or downloaded/built."""

    path: Path
    hit: bool


def check_sha256(sha256: str) -> str:
    """The hash itself; ValueError unless it is 64 lowercase hex digits (an entry's name)."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"invalid content hash {sha256[:80]!r} (expected 64 hex digits)")
    return sha256


@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive flock on `path` for the block; yields False when `blocking` is off and
    another holder has it. Lock files are never deleted: a waiter may hold one open."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True  # released when the file closes


class LocalCache:
    """Entries by content hash under `root`, together at most `max_bytes` (the entry just
    added stays even when it alone is larger)."""

    def __init__(self, root: Path | str, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    @property
    def scratch(self) -> Path:
        """A folder for temporary files on the cache's filesystem."""
        path = self.root / "scratch"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ entries

    def file(self, store: ArtifactStore, key: str, sha256: str) -> Path:
        """A local, verified copy of the object at `key` whose content hash is `sha256`.
        ArtifactMissing when the store has no such object; ChecksumMismatch (nothing kept)
        when its bytes are not the recorded ones."""
        return self.fetch(store, key, sha256).path

    def fetch(self, store: ArtifactStore, key: str, sha256: str) -> Fetched:
        """`file`, saying whether the copy was already here."""
        final = self.root / "files" / check_sha256(sha256)
        if self._touch(final):
            return Fetched(final, True)
        with _locked(final.with_name(f"{sha256}.lock")):
            if self._touch(final):  # another caller downloaded it while this one waited
                return Fetched(final, True)
            _remove_leftovers(final)
            partial = final.with_name(f".{sha256}.download")
            try:
                _, digest = store.download(key, partial)
                if digest != sha256:
                    raise ChecksumMismatch(
                        f"{key} in the artifact store has sha256 {digest}, not the recorded "
                        f"{sha256}: it was changed or corrupted after it was written"
                    )
                _stamp(partial)
                os.replace(partial, final)
            finally:
                partial.unlink(missing_ok=True)
            self._count("misses")
        self._evict(keep=final)
        return Fetched(final, False)

    def folder(self, sha256: str, build: Callable[[Path], None]) -> Path:
        """`models/<sha256>`, made once by `build(staging)`: `build` creates the folder
        `staging` (absent when called) and fills it; it is renamed into place if `build`
        returns, removed if it raises."""
        return self.fetch_folder(sha256, build).path

    def fetch_folder(self, sha256: str, build: Callable[[Path], None]) -> Fetched:
        """`folder`, saying whether it was already here."""
        final = self.root / "models" / check_sha256(sha256)
        if self._touch(final):  # it appears whole (a rename), so present means complete
            return Fetched(final, True)
        with _locked(final.with_name(f"{sha256}.lock")):
            if self._touch(final):
                return Fetched(final, True)
            _remove_leftovers(final)  # what a killed builder left: under the lock, none is live
            staging = final.with_name(f".{sha256}.{uuid.uuid4().hex}.tmp")
            try:
                build(staging)
                _stamp(staging)
                os.replace(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self._count("misses")
        self._evict(keep=final)
        return Fetched(final, False)

    def _touch(self, entry: Path) -> bool:
        """Mark a present entry as just used (a hit); False when it is absent."""
        try:
            _stamp(entry)
        except FileNotFoundError:
            return False
        self._count("hits")
        return True

    # ----------------------------------------------------------------- the bound

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, path) of every complete entry, least recently used first."""
        found = []
        for kind in ("files", "models"):
            folder = self.root / kind
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if not _SHA256.fullmatch(path.name):
                    continue  # locks, downloads and builds under way
                with contextlib.suppress(FileNotFoundError):
                    found.append((path.stat().st_mtime, _bytes(path), path))
        return sorted(found, key=lambda entry: entry[0])

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used entries but `keep` until the rest fit."""
        with _locked(self.root / "evict.lock"):
            entries = self.entries()
            total = sum(size for _, size, _ in entries)
            for _, size, path in entries:
                if total <= self.max_bytes:
                    break
                if path != keep and _remove_unless_busy(path):
                    total -= size
                    self._count("evictions")

    # ------------------------------------------------------------------ counters

    def _count(self, counter: str) -> None:
        with _locked(self.root / "stats.lock"):
            counts = self._read_stats()
            counts[counter] = counts.get(counter, 0) + 1
            staged = self.root / f".stats.{uuid.uuid4().hex}.tmp"
            staged.write_text(json.dumps(counts))
            os.replace(staged, self.root / "stats.json")

    def _read_stats(self) -> dict[str, int]:
        try:
            raw: Any = json.loads((self.root / "stats.json").read_text())
        except (FileNotFoundError, ValueError):
            raw = {}
        counts = raw if isinstance(raw, dict) else {}
        return {name: int(counts.get(name, 0)) for name in _COUNTERS}

    def stats(self) -> dict[str, Any]:
        """hits, misses, evictions (since the folder was made), hit_rate, and the entries'
        count and bytes now."""
        with _locked(self.root / "stats.lock"):
            counts: dict[str, Any] = dict(self._read_stats())
        lookups = counts["hits"] + counts["misses"]
        entries = self.entries()
        counts["hit_rate"] = counts["hits"] / lookups if lookups else 0.0
        counts["entries"] = len(entries)
        counts["bytes"] = sum(size for _, size, _ in entries)
        counts["max_bytes"] = self.max_bytes
        return counts


def _stamp(path: Path) -> None:
    """Set the mtime (the entry's last use) from the precise clock: the filesystem's own
    stamps may tie for uses a few milliseconds apart."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for member in path.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            if member.is_file() and not member.is_symlink():
                total += member.stat().st_size
    return total


def _remove_leftovers(final: Path) -> None:
    """Partial downloads and builds of the entry (call with its lock held)."""
    for stale in final.parent.glob(f".*{final.name}*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _remove_unless_busy(entry: Path) -> bool:
    """Remove an entry unless its lock is held (it is being built); whether it went. A
    folder is renamed aside first, so no reader ever sees half of one."""
    with _locked(entry.with_name(f"{entry.name}.lock"), blocking=False) as acquired:
        if not acquired:
            return False
        if entry.is_dir():
            aside = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.tmp")
            try:
                os.replace(entry, aside)
            except FileNotFoundError:
                return False
            shutil.rmtree(aside, ignore_errors=True)
            return True
        try:
            entry.unlink()
        except FileNotFoundError:
            return False
        return True


def cache_for(settings: Settings) -> LocalCache:
    """This machine's cache: SEQTRAIN_CACHE_DIR, bounded by SEQTRAIN_CACHE_BYTES."""
    return LocalCache(Path(settings.cache_dir), settings.cache_bytes)


def readable_file(store: ArtifactStore, cache: LocalCache, key: str, sha256: str) -> Path:
    """A local file with the object's bytes: the store's own file where the store is a
    directory (read in place, unchecked), else the cache's verified copy."""
    path = store.local_path(key)
    if path is None:
        return cache.file(store, key, sha256)
    if not path.is_file():
        raise ArtifactMissing(f"{key} is missing from the artifact store")
    return path
