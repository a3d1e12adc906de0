"""Pretrained models unpacked once per content hash into a local cache.

`checkout` gives the folder a model's files sit in (`<cache_dir>/models/<sha256>/`, what
`from_pretrained(..., local_files_only=True)` reads). The first caller unpacks, under an
exclusive lock on `<sha256>.lock` beside it: it verifies the archive's hash, unpacks into a
temporary sibling, and renames that into place, so a process (another worker, another
trainer) never sees half a folder, and the others wait for it and reuse the result.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from pathlib import Path

from shared.hub import archive
from shared.hub.registry import ModelError
from shared.infra.storage import ArtifactStore, file_digest

_SHA256 = re.compile(r"[0-9a-f]{64}")


def checkout(store: ArtifactStore, uri: str, sha256: str, cache_dir: Path, max_bytes: int) -> Path:
    """The unpacked folder of the archive at `uri` whose content hash is `sha256`;
    ModelError when the archive is missing from the store or its bytes have changed."""
    if not _SHA256.fullmatch(sha256):
        raise ModelError(f"invalid model content hash {sha256[:80]!r}")
    models = cache_dir / "models"
    final = models / sha256
    if final.is_dir():  # it appears whole (a rename), so present means complete
        return final
    models.mkdir(parents=True, exist_ok=True)
    with (models / f"{sha256}.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
        if not final.is_dir():  # another process may have unpacked it while this one waited
            _unpack_verified(store, uri, sha256, final, max_bytes)
    return final


def _unpack_verified(
    store: ArtifactStore, uri: str, sha256: str, final: Path, max_bytes: int
) -> None:
    source = store.path(uri)
    if not source.is_file():
        raise ModelError(f"the model archive {uri} is missing from the artifact store")
    _, digest = file_digest(source)
    if digest != sha256:
        raise ModelError(
            f"the model archive {uri} has changed since its upload (sha256 {digest}, "
            f"expected {sha256}); upload the model again"
        )
    # A process killed while unpacking left its staging folder: under the lock, none is live.
    for stale in final.parent.glob(f".{sha256}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = final.with_name(f".{sha256}.{uuid.uuid4().hex}.tmp")
    try:
        archive.unpack(source, staging, max_bytes)
        os.replace(staging, final)
    except archive.ModelArchiveError as exc:
        raise ModelError(f"the model archive {uri} cannot be unpacked: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
