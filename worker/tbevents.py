"""TensorBoard event files, written without TensorBoard or TensorFlow installed.

An event file is a sequence of TFRecords, each `Event` protobuf framed as

    uint64 length | uint32 masked crc32c(length) | bytes | uint32 masked crc32c(bytes)

(little-endian). We write the version record, then one `Event{wall_time, step, summary{value
{tag, simple_value}}}` per scalar: all TensorBoard needs for its scalar charts. The encoding
is checked against TensorBoard's own reader in the tests.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


def encode_event(
    wall_time: float,
    step: int = 0,
    *,
    version: str | None = None,
    scalar: tuple[str, float] | None = None,
) -> bytes:
    """One `Event` message: the file version record, or a scalar summary."""
    message = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if version is not None:
        message += _length_delimited(3, version.encode())
    if scalar is not None:
        tag, value = scalar
        summary_value = _length_delimited(1, tag.encode()) + _field(2, 5, struct.pack("<f", value))
        message += _length_delimited(5, _length_delimited(1, summary_value))
    return message


def frame(record: bytes) -> bytes:
    header = struct.pack("<Q", len(record))
    return header + struct.pack("<I", _masked(header)) + record + struct.pack("<I", _masked(record))


def read_records(path: Path) -> Iterator[bytes]:
    """The records of an event file, with both checksums verified."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        record = data[offset + 12 : offset + 12 + length]
        (record_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        if header_crc != _masked(header) or record_crc != _masked(record):
            raise ValueError(f"{path}: corrupt record at byte {offset}")
        yield record
        offset += 16 + length


class EventWriter:
    """Appends scalars to one event file in `folder`, named the way TensorBoard expects."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = folder / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.seqtrain"
        with self.path.open("ab") as handle:
            handle.write(frame(encode_event(now, version="brain.Event:2")))

    def add_scalars(self, rows: Iterable[tuple[str, int, float]]) -> None:
        """(tag, step, value) rows, appended and flushed together."""
        now = time.time()
        data = b"".join(
            frame(encode_event(now, step, scalar=(tag, float(value)))) for tag, step, value in rows
        )
        if data:
            with self.path.open("ab") as handle:
                handle.write(data)
