"""The artifact store: where datasets, checkpoints, logs, TensorBoard files and uploaded models
live. One interface, two kinds, chosen by `ARTIFACT_ROOT`:

- a directory (`var/artifacts`, or a shared mount when workers run on several hosts):
  `LocalStore`;
- an S3-compatible bucket (`s3://bucket/prefix`: AWS S3, MinIO, SeaweedFS, Ceph's gateway):
  `shared.infra.s3.S3Store`, so that workers on many machines need no shared filesystem.

Keys are relative POSIX paths such as `jobs/12/checkpoints/step-00000300.safetensors`.
Writers stage a local file (`staging_path`) and `commit` it: the key appears whole or not at
all (a rename on disk; a completed multipart upload in a bucket), and `commit` returns the
size and sha256 that the database row records. Readers stream (`open`, `read_range`) or copy
to a local file (`download`). A writer killed mid-way leaves an orphan that is invisible
under the key (a staging file, an incomplete upload); `sweep_orphans` removes it later.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from shared.settings import Settings

# Staged files and incomplete uploads older than this are orphans: no writer is still on them.
ORPHAN_SECONDS = 6 * 3600.0


class StoreError(Exception):
    """The store cannot be reached or refused an operation (after its retries)."""


class ArtifactMissing(StoreError, FileNotFoundError):
    """No object under the key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # POSIX seconds


def check_key(key: str) -> PurePosixPath:
    """The key as a path; refuses keys that would escape the root (absolute, `..`, empty)."""
    pure = PurePosixPath(key)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\\" in key:
        raise ValueError(f"invalid artifact key {key!r}")
    return pure


class ArtifactStore(ABC):
    """What the API and workers use for every artifact."""

    #: ARTIFACT_ROOT as the children of a worker must see it (a path or an s3:// URL).
    url: str
    #: True when keys are files on this machine's filesystem (reads need no copy).
    is_local: bool = False

    @abstractmethod
    def staging_path(self, key: str) -> Path:
        """A fresh local file to write the key's content into before `commit`."""

    @abstractmethod
    def commit(self, staging: Path, key: str) -> tuple[int, str]:
        """Publish a staged file under `key` atomically and verified; the staged file is
        consumed. Returns (bytes, sha256). Raises StoreError when the store stays down."""

    @abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """A binary stream of the object (close it); ArtifactMissing when there is none."""

    @abstractmethod
    def read_range(self, key: str, start: int, length: int) -> bytes:
        """At most `length` bytes from `start` (fewer at the end); ArtifactMissing."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size in bytes, None when there is none."""

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix` (a folder: end it with `/`), by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; nothing happens when there is none."""

    @abstractmethod
    def sweep_orphans(self, older_than: float = ORPHAN_SECONDS) -> int:
        """Remove what killed writers left (staged files, incomplete uploads) older than
        `older_than` seconds; the number removed."""

    def local_path(self, key: str) -> Path | None:
        """The key's file on this machine, where the store is a directory; None otherwise."""
        return None

    def presigned_url(self, key: str, filename: str) -> str | None:
        """A time-limited URL the client may download from directly, when configured."""
        return None

    # ------------------------------------------------------------- built on the above

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def put_bytes(self, data: bytes, key: str) -> tuple[int, str]:
        staging = self.staging_path(key)
        staging.write_bytes(data)
        return self.commit(staging, key)

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    def download(self, key: str, dest: Path) -> tuple[int, str]:
        """Copy the object to `dest` (written beside it, then renamed); (bytes, sha256)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        digest = hashlib.sha256()
        size = 0
        try:
            with self.open(key) as source, partial.open("wb") as out:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        return size, digest.hexdigest()

    @contextlib.contextmanager
    def local_copy(self, key: str, scratch: Path) -> Iterator[Path]:
        """The key as a local file for the duration of the block: the file itself in a
        local store, else a copy under `scratch` removed afterwards."""
        path = self.local_path(key)
        if path is not None:
            if not path.is_file():
                raise ArtifactMissing(f"{key} is missing from the artifact store")
            yield path
            return
        copy = scratch / f"copy-{uuid.uuid4().hex}-{PurePosixPath(key).name}"
        try:
            self.download(key, copy)
            yield copy
        finally:
            copy.unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        found = self.list(prefix)
        for info in found:
            self.delete(info.key)
        return len(found)


class LocalStore(ArtifactStore):
    """A directory. Files are written to a temporary name beside their place and renamed,
    so a reader never sees half a file."""

    is_local = True

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        """Absolute path of a key; refuses keys that would escape the root."""
        return self.root.joinpath(*check_key(key).parts)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def staging_path(self, key: str) -> Path:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")

    def commit(self, staging: Path, key: str) -> tuple[int, str]:
        """fsync and atomically move a staged file into place."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if staging.parent != final.parent:  # another filesystem, perhaps: copy beside it
            beside = self.staging_path(key)
            shutil.move(staging, beside)
            staging = beside
        with staging.open("rb") as handle:
            os.fsync(handle.fileno())
        size, digest = file_digest(staging)
        os.replace(staging, final)
        return size, digest

    def open(self, key: str) -> IO[bytes]:
        try:
            return self.path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactMissing(f"{key} is missing from the artifact store") from None

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self.open(key) as handle:
            handle.seek(start)
            return handle.read(max(0, length))

    def size(self, key: str) -> int | None:
        path = self.path(key)
        try:
            return path.stat().st_size if path.is_file() else None
        except FileNotFoundError:  # deleted between the two calls
            return None

    def list(self, prefix: str) -> list[ObjectInfo]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.path(folder) if folder else self.root
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            if not path.is_file() or path.name.endswith((".tmp", ".part")):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                stat = path.stat()
                found.append(ObjectInfo(key, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def sweep_orphans(self, older_than: float = ORPHAN_SECONDS) -> int:
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for path in self.root.rglob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed


def is_remote(root: str | Path) -> bool:
    return str(root).startswith("s3://")


def open_store(settings: Settings) -> ArtifactStore:
    """The store `ARTIFACT_ROOT` names: a directory, or `s3://bucket/prefix`."""
    if is_remote(settings.artifact_root):
        from shared.infra.s3 import S3Store

        return S3Store.from_settings(settings)
    return LocalStore(settings.artifact_root)


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
