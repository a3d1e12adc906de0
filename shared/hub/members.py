"""The members of an uploaded .zip or .tar.gz, walked once, in order, without extraction.

Every member is checked before anything reads its data: a relative path without `..`, a
regular file or a folder (never a link, device or FIFO), and the sizes declared so far
within the bound. A zip's whole central directory is checked before any data is read; a
tar's headers are summed as the walk meets them, and the decompressed stream itself is
bounded, so neither a zip bomb nor a tar of huge headers is ever inflated past the bound.
Standard library only.
"""

from __future__ import annotations

import gzip
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

MAX_MEMBERS = 10_000
# Tar headers and padding beyond the members' own bytes (512-byte blocks, pax headers).
TAR_OVERHEAD = MAX_MEMBERS * 2048 + (1 << 20)
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ModelArchiveError(ValueError):
    """An archive cannot be read safely: `.message` says why, `.file` names the member (or
    None for the archive as a whole)."""

    def __init__(self, message: str, file: str | None = None) -> None:
        super().__init__(f"{file}: {message}" if file else message)
        self.message, self.file = message, file


@dataclass(frozen=True)
class Member:
    """One archive member: its name as stored, its path parts (`.` parts dropped), the size
    its header declares, and whether it is a folder."""

    name: str
    parts: tuple[str, ...]
    size: int
    is_dir: bool


_READ_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    NotImplementedError,
    OSError,
    ValueError,
)


class MemberReader:
    """A member's data; a corrupt archive, a bad checksum or a stream cut short is an
    ModelArchiveError naming the member."""

    def __init__(self, name: str, handle: IO[bytes]) -> None:
        self.name, self.handle = name, handle

    def read(self, size: int = -1) -> bytes:
        try:
            return self.handle.read(size)
        except ModelArchiveError:
            raise
        except _READ_ERRORS as exc:
            raise ModelArchiveError(
                f"cannot be read ({exc}); the archive is corrupt", self.name
            ) from None

    def exactly(self, size: int) -> bytes:
        """`size` bytes, or an ModelArchiveError when the member ends sooner."""
        data = self.read(size)
        if len(data) != size:
            raise ModelArchiveError(f"ends after {len(data):,} of {size:,} bytes read", self.name)
        return data


# Opens the current member's data; valid only until the walk moves on.
Opener = Callable[[], MemberReader]


def archive_format(path: Path) -> str:
    """ "zip" or "tar.gz", from the file's first bytes (never its name)."""
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if magic[:2] == b"\x1f\x8b":
        return "tar.gz"
    raise ModelArchiveError("the upload is not a .zip or .tar.gz archive (judged by its content)")


def walk(path: Path, max_bytes: int) -> Iterator[tuple[Member, Opener]]:
    """Every member with an opener of its data, in archive order; ModelArchiveError at the first
    unsafe member, or as soon as the declared sizes pass `max_bytes`."""
    if archive_format(path) == "zip":
        yield from _walk_zip(path, max_bytes)
    else:
        yield from _walk_tar(path, max_bytes)


def checked_parts(name: str) -> tuple[str, ...]:
    """A member name's path parts, refusing absolute paths, `..`, backslashes and control
    characters (a name that could write outside the folder it is unpacked into)."""
    if name.startswith("/") or _DRIVE.match(name):
        raise ModelArchiveError("an absolute path is not allowed in the archive", name)
    if "\\" in name:
        raise ModelArchiveError("a backslash is not allowed in a member's path", name)
    if _CONTROL.search(name):
        raise ModelArchiveError("a control character is not allowed in a member's path", name)
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ModelArchiveError("'..' is not allowed in a member's path", name)
    return parts


class _Budget:
    """Counts members and declared bytes; refuses past the bounds."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.total, self.members = max_bytes, 0, 0

    def add(self, name: str, size: int) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise ModelArchiveError(f"the archive holds more than {MAX_MEMBERS:,} members", name)
        self.total += size
        if self.total > self.max_bytes:
            raise ModelArchiveError(
                f"the archive unpacks to more than the {self.max_bytes:,}-byte limit "
                f"(SEQTRAIN_MAX_MODEL_BYTES): {self.total:,} bytes up to this member",
                name,
            )


# ---------------------------------------------------------------- zip


def _zip_member(info: zipfile.ZipInfo) -> Member:
    name = info.filename
    parts = checked_parts(name)
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ModelArchiveError("links are not allowed in the archive", name)
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ModelArchiveError("devices, FIFOs and sockets are not allowed in the archive", name)
    if info.flag_bits & 0x1:
        raise ModelArchiveError("encrypted members cannot be read", name)
    return Member(name, parts, info.file_size, info.is_dir())


# The most bytes a central directory may take: a record is 46 bytes plus its name and
# extra fields, so 10,000 members with long names fit; zipfile reads it all into memory.
MAX_DIRECTORY_BYTES = MAX_MEMBERS * 1024
_END_OF_DIRECTORY = b"PK\x05\x06"
_ZIP64_END = b"PK\x06\x06"


def check_zip_directory(path: Path) -> None:
    """Refuse a zip whose central directory holds too many members or bytes, from its end
    records alone, before `zipfile` parses the directory into one object a member."""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        tail_start = max(0, size - (1 << 16) - 22)  # the end record, and a comment of < 64 KiB
        handle.seek(tail_start)
        tail = handle.read()
    at = tail.rfind(_END_OF_DIRECTORY)
    if at < 0 or len(tail) < at + 22:
        raise ModelArchiveError("the zip archive is corrupt: no end of central directory")
    entries = int.from_bytes(tail[at + 10 : at + 12], "little")
    directory = int.from_bytes(tail[at + 12 : at + 16], "little")
    zip64 = tail.rfind(_ZIP64_END, 0, at)
    if zip64 >= 0 and len(tail) >= zip64 + 56:  # its counts replace the 16- and 32-bit ones
        entries = int.from_bytes(tail[zip64 + 32 : zip64 + 40], "little")
        directory = int.from_bytes(tail[zip64 + 40 : zip64 + 48], "little")
    if entries > MAX_MEMBERS:
        raise ModelArchiveError(f"the archive holds more than {MAX_MEMBERS:,} members")
    if directory > MAX_DIRECTORY_BYTES:
        raise ModelArchiveError(
            f"the zip's central directory is {directory:,} bytes; at most "
            f"{MAX_DIRECTORY_BYTES:,} are read"
        )


def _walk_zip(path: Path, max_bytes: int) -> Iterator[tuple[Member, Opener]]:
    check_zip_directory(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelArchiveError(f"the zip archive is corrupt: {exc}") from None
    with archive:
        # The central directory whole, before a single byte of data is inflated.
        budget = _Budget(max_bytes)
        members = []
        for info in archive.infolist():
            member = _zip_member(info)
            budget.add(member.name, member.size)
            members.append((member, info))
        for member, info in members:
            yield member, _zip_opener(archive, info)


def _zip_opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Opener:
    def open_member() -> MemberReader:
        try:
            return MemberReader(info.filename, archive.open(info))
        except _READ_ERRORS as exc:
            raise ModelArchiveError(f"cannot be read: {exc}", info.filename) from None

    return open_member


# ---------------------------------------------------------------- tar.gz


class _BoundedStream:
    """A decompressed stream that refuses to give more than `limit` bytes in all."""

    def __init__(self, raw: gzip.GzipFile, limit: int) -> None:
        self.raw, self.limit, self.read_so_far = raw, limit, 0

    def read(self, size: int = -1) -> bytes:
        left = self.limit - self.read_so_far
        want = left + 1 if size < 0 or size > left else size
        data = self.raw.read(want)
        self.read_so_far += len(data)
        if self.read_so_far > self.limit:
            raise ModelArchiveError(
                f"the archive decompresses to more than {self.limit:,} bytes "
                "(the SEQTRAIN_MAX_MODEL_BYTES limit plus its headers)"
            )
        return data


MAX_TAR_METADATA = 1 << 20
_METADATA_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header whose extended metadata (a pax header, a GNU long name) is refused past
    MAX_TAR_METADATA before tarfile reads it into memory."""

    def _proc_member(self, tarfile: Any) -> Any:
        if self.type in _METADATA_TYPES and self.size > MAX_TAR_METADATA:
            raise ModelArchiveError(
                f"a {self.size:,}-byte extended header is more than the "
                f"{MAX_TAR_METADATA:,} bytes allowed",
                self.name or None,
            )
        return super()._proc_member(tarfile)  # type: ignore[misc]  # private in typeshed


def _tar_member(info: tarfile.TarInfo) -> Member:
    name = info.name
    parts = checked_parts(name)
    if info.issym() or info.islnk():
        raise ModelArchiveError("links are not allowed in the archive", name)
    if info.isdev():
        raise ModelArchiveError("devices and FIFOs are not allowed in the archive", name)
    if info.issparse():
        raise ModelArchiveError("sparse files are not allowed in the archive", name)
    if not (info.isreg() or info.isdir()):
        raise ModelArchiveError(f"unsupported member type {info.type!r}", name)
    return Member(name, parts, info.size if info.isreg() else 0, info.isdir())


def _walk_tar(path: Path, max_bytes: int) -> Iterator[tuple[Member, Opener]]:
    budget = _Budget(max_bytes)
    with path.open("rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as inflated:
        stream: Any = _BoundedStream(inflated, max_bytes + TAR_OVERHEAD)
        try:
            # "r|": one forward pass over the stream, headers checked as they come.
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as archive:
                for info in _tar_infos(archive):
                    member = _tar_member(info)
                    budget.add(member.name, member.size)
                    yield member, _tar_opener(archive, info)
        except ModelArchiveError:
            raise
        except _READ_ERRORS as exc:
            raise ModelArchiveError(f"the tar.gz archive is corrupt: {exc}") from None


def _tar_infos(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (info := archive.next()) is not None:
        yield info


def _tar_opener(archive: tarfile.TarFile, info: tarfile.TarInfo) -> Opener:
    def open_member() -> MemberReader:
        try:
            handle = archive.extractfile(info)
        except _READ_ERRORS as exc:
            raise ModelArchiveError(f"cannot be read: {exc}", info.name) from None
        if handle is None:
            raise ModelArchiveError("is not a regular file", info.name)
        return MemberReader(info.name, handle)

    return open_member
