"""Artifact store: a directory (local, or a shared mount when workers run on several hosts).

Keys are relative POSIX paths such as `jobs/12/checkpoints/step-00000300.safetensors`.
Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path, PurePosixPath


class ArtifactStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        """Absolute path of a key; refuses keys that would escape the root."""
        pure = PurePosixPath(key)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise ValueError(f"invalid artifact key {key!r}")
        return self.root.joinpath(*pure.parts)

    def staging_path(self, key: str) -> Path:
        """A temporary path beside the key's final place; pass it to `commit` when written."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")

    def commit(self, staging: Path, key: str) -> tuple[int, str]:
        """fsync and atomically move a staged file into place; returns (bytes, sha256)."""
        with staging.open("rb") as handle:
            os.fsync(handle.fileno())
        size, digest = file_digest(staging)
        os.replace(staging, self.path(key))
        return size, digest

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
