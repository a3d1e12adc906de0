"""Pretrained models unpacked once per content hash into a local cache.

`checkout` gives the folder a model's files sit in (`<cache_dir>/models/<sha256>/`, what
`from_pretrained(..., local_files_only=True)` reads). The first caller builds it under the
entry's lock (shared.infra.cache.LocalCache.folder): it takes the archive (the store's file
in place for a directory store, else a temporary download), verifies its hash, and unpacks
it into a temporary sibling that is renamed into place, so a process (another worker,
another trainer) never sees half a folder; the others wait for it and reuse the result.
"""

from __future__ import annotations

from pathlib import Path

from shared.hub import archive
from shared.hub.registry import ModelError
from shared.infra.cache import LocalCache, check_sha256
from shared.infra.storage import ArtifactMissing, ArtifactStore, file_digest


def checkout(
    store: ArtifactStore, uri: str, sha256: str, cache: LocalCache, max_bytes: int
) -> Path:
    """The unpacked folder of the archive at `uri` whose content hash is `sha256`;
    ModelError when the archive is missing from the store or its bytes have changed."""
    try:
        check_sha256(sha256)
    except ValueError:
        raise ModelError(f"invalid model content hash {sha256[:80]!r}") from None

    def build(staging: Path) -> None:
        _unpack_verified(store, uri, sha256, cache, staging, max_bytes)

    return cache.folder(sha256, build)


def _unpack_verified(
    store: ArtifactStore,
    uri: str,
    sha256: str,
    cache: LocalCache,
    staging: Path,
    max_bytes: int,
) -> None:
    try:
        with store.local_copy(uri, cache.scratch) as source:
            _, digest = file_digest(source)
            if digest != sha256:
                raise ModelError(
                    f"the model archive {uri} has changed since its upload (sha256 {digest}, "
                    f"expected {sha256}); upload the model again"
                )
            archive.unpack(source, staging, max_bytes)
    except ArtifactMissing:
        raise ModelError(f"the model archive {uri} is missing from the artifact store") from None
    except archive.ModelArchiveError as exc:
        raise ModelError(f"the model archive {uri} cannot be unpacked: {exc}") from None
