"""The artifact store in an S3-compatible bucket (`ARTIFACT_ROOT=s3://bucket/prefix`).

boto3 does the protocol; this module adds what the service needs on top of it:

- **Atomic, verified writes.** A staged file is sent as one PUT (up to PART_BYTES) or as a
  multipart upload. The object is visible only once the upload completes, so a writer
  killed mid-way leaves no object, only an incomplete upload that `sweep_orphans` aborts.
  Every request carries its part's MD5, which the server checks; the object carries its
  sha256 in its metadata; and after the upload the object's size, ETag (the MD5, or the
  MD5 of the parts' MD5s) and sha256 are read back and compared before `commit` returns,
  so the caller writes its database row only for a complete, checked object.
- **Riding out an outage.** Connection errors, timeouts and 5xx answers are retried with
  backoff for up to SEQTRAIN_STORE_RETRY_SECONDS, each part on its own: a store that is down
  for a few seconds delays a checkpoint, it does not fail the job.
- **Endpoint and credentials the standard way.** SEQTRAIN_S3_ENDPOINT_URL, else boto3's own
  AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL; credentials from AWS_ACCESS_KEY_ID and
  AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws or an instance role (boto3's chain). Path-style
  addressing, which MinIO, SeaweedFS and Ceph expect.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.infra.storage import (
    ORPHAN_SECONDS,
    ArtifactMissing,
    ArtifactStore,
    ObjectInfo,
    StoreError,
    check_key,
)

if TYPE_CHECKING:
    from shared.settings import Settings

T = TypeVar("T")
# Parts of a multipart upload (S3's minimum is 5 MiB, except the last).
PART_BYTES = 16 << 20
_RETRIED_CODES = {"500", "502", "503", "504", "RequestTimeout", "SlowDown", "InternalError"}
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r} (expected s3://bucket/prefix)")
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return bucket, prefix


def _transient(exc: BaseException) -> bool:
    """Whether a failed request is worth retrying (the store down, slow or overloaded)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return str(error.get("Code", "")) in _RETRIED_CODES or status.startswith("5")
    return isinstance(exc, BotoCoreError)  # connection refused or reset, timeouts


def _missing(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return str(error.get("Code", "")) in _MISSING_CODES or status == "404"


def _md5_b64(data: bytes) -> tuple[bytes, str]:
    digest = hashlib.md5(data, usedforsecurity=False).digest()
    return digest, base64.b64encode(digest).decode()


class S3Store(ArtifactStore):
    def __init__(
        self,
        url: str,
        scratch: Path,
        endpoint_url: str | None = None,
        retry_seconds: float = 120.0,
        presign_seconds: int = 0,
        region: str | None = None,
    ) -> None:
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self.scratch = scratch
        self.retry_seconds = retry_seconds
        self.presign_seconds = presign_seconds
        config = Config(
            retries={"max_attempts": 2, "mode": "standard"},  # ours come on top: _retry
            connect_timeout=5,
            read_timeout=60,
            s3={"addressing_style": "path"},
            signature_version="s3v4",  # presigned URLs too (boto3 presigns with SigV2 else)
            # Checksums beyond Content-MD5 are not implemented by every S3-compatible store.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        self.client = session.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or session.region_name or "us-east-1",
            config=config,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        return cls(
            str(settings.artifact_root),
            Path(settings.cache_dir) / "staging",
            endpoint_url=settings.s3_endpoint_url or None,
            retry_seconds=settings.store_retry_seconds,
            presign_seconds=settings.s3_presign_seconds,
        )

    def _name(self, key: str) -> str:
        pure = check_key(key).as_posix()
        return f"{self.prefix}/{pure}" if self.prefix else pure

    def _key(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        """`call`, retried with backoff while the store is unreachable or answers 5xx."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.25
        while True:
            try:
                return call()
            except (ClientError, BotoCoreError) as exc:
                if not _transient(exc) or time.monotonic() >= deadline:
                    if isinstance(exc, ClientError) and _missing(exc):
                        raise ArtifactMissing(f"{what}: no such object") from None
                    raise StoreError(f"artifact store: {what} failed: {exc}") from exc
                print(
                    f"artifact store unavailable ({type(exc).__name__}) during {what}; "
                    f"retrying in {delay:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------- writes

    def staging_path(self, key: str) -> Path:
        check_key(key)
        self.scratch.mkdir(parents=True, exist_ok=True)
        return self.scratch / f".{PurePosixPath(key).name}.{uuid.uuid4().hex}.tmp"

    def commit(self, staging: Path, key: str) -> tuple[int, str]:
        name = self._name(key)
        try:
            size, sha256, etag = self._upload(staging, name)
            self._verify(name, size, sha256, etag)
        finally:
            staging.unlink(missing_ok=True)
        return size, sha256

    def _upload(self, staging: Path, name: str) -> tuple[int, str, str]:
        """Send the file; (size, sha256, the ETag it must have)."""
        sha = hashlib.sha256()
        with staging.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                sha.update(chunk)
        sha256 = sha.hexdigest()
        size = staging.stat().st_size
        meta = {"sha256": sha256}
        if size <= PART_BYTES:
            data = staging.read_bytes()
            raw, md5 = _md5_b64(data)
            self._retry(
                f"upload of {name}",
                lambda: self.client.put_object(
                    Bucket=self.bucket, Key=name, Body=data, ContentMD5=md5, Metadata=meta
                ),
            )
            return size, sha256, raw.hex()
        upload = self._retry(
            f"upload of {name}",
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=name, Metadata=meta
            ),
        )["UploadId"]
        try:
            parts, digests = self._send_parts(staging, name, upload)
            self._retry(
                f"upload of {name}",
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload,
                    MultipartUpload={"Parts": parts},
                ),
            )
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload)
            raise
        combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
        return size, sha256, f"{combined}-{len(digests)}"

    def _send_parts(
        self, staging: Path, name: str, upload: str
    ) -> tuple[list[dict[str, Any]], list[bytes]]:
        parts: list[dict[str, Any]] = []
        digests: list[bytes] = []
        with staging.open("rb") as handle:
            while data := handle.read(PART_BYTES):
                number = len(parts) + 1
                raw, md5 = _md5_b64(data)
                send = functools.partial(
                    self.client.upload_part,
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload,
                    PartNumber=number,
                    Body=data,
                    ContentMD5=md5,
                )
                answer = self._retry(f"upload of {name} (part {number})", send)
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                digests.append(raw)
        return parts, digests

    def _verify(self, name: str, size: int, sha256: str, etag: str) -> None:
        """Read the object's size, ETag and recorded sha256 back: it must be what was sent."""
        head = self._retry(
            f"check of {name}", lambda: self.client.head_object(Bucket=self.bucket, Key=name)
        )
        found_etag = str(head.get("ETag", "")).strip('"')
        found_sha = head.get("Metadata", {}).get("sha256")
        if head["ContentLength"] != size or found_sha != sha256 or found_etag != etag:
            raise StoreError(
                f"artifact store: {name} does not match what was uploaded (size "
                f"{head['ContentLength']} of {size}, ETag {found_etag!r} for {etag!r})"
            )

    # -------------------------------------------------------------------- reads

    def open(self, key: str) -> IO[bytes]:
        name = self._name(key)
        answer = self._retry(
            f"download of {name}", lambda: self.client.get_object(Bucket=self.bucket, Key=name)
        )
        body: IO[bytes] = answer["Body"]
        return body

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        name = self._name(key)
        try:
            answer = self._retry(
                f"read of {name}",
                lambda: self.client.get_object(
                    Bucket=self.bucket, Key=name, Range=f"bytes={start}-{start + length - 1}"
                ),
            )
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in (
                "InvalidRange",
                "416",
            ):
                return b""  # from at or past the end
            raise
        with contextlib.closing(answer["Body"]) as body:
            data: bytes = body.read()
        return data

    def size(self, key: str) -> int | None:
        name = self._name(key)
        try:
            head = self._retry(
                f"check of {name}", lambda: self.client.head_object(Bucket=self.bucket, Key=name)
            )
        except ArtifactMissing:
            return None
        return int(head["ContentLength"])

    def list(self, prefix: str) -> list[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        found: list[ObjectInfo] = []

        def collect() -> None:
            found.clear()
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for item in page.get("Contents", []):
                    modified = item["LastModified"].timestamp()
                    found.append(ObjectInfo(self._key(item["Key"]), item["Size"], modified))

        self._retry(f"listing of {full}", collect)
        return sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._retry(
            f"delete of {name}", lambda: self.client.delete_object(Bucket=self.bucket, Key=name)
        )

    def sweep_orphans(self, older_than: float = ORPHAN_SECONDS) -> int:
        """Abort incomplete uploads under the prefix that began over `older_than` seconds
        ago, and remove stale staged files in the local scratch folder."""
        cutoff = time.time() - older_than
        stale: list[tuple[str, str]] = []

        def collect() -> None:
            stale.clear()
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
            )
            for page in pages:
                for item in page.get("Uploads", []):
                    if item["Initiated"].timestamp() < cutoff:
                        stale.append((item["Key"], item["UploadId"]))

        self._retry("listing of incomplete uploads", collect)
        for name, upload in stale:
            with contextlib.suppress(ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload)
        removed = len(stale)
        if self.scratch.is_dir():
            for path in self.scratch.glob(".*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
        return removed

    def presigned_url(self, key: str, filename: str) -> str | None:
        if self.presign_seconds <= 0:
            return None
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._name(key),
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=self.presign_seconds,
        )
        return url
