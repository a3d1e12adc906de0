"""TensorBoard event files: our writer read back by TensorBoard's own reader, its framing
checked record by record, and a job's files downloaded through the API."""

from __future__ import annotations

import io
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tensorboardX.crc32c import crc32c
from tensorboardX.record_writer import masked_crc32c

from tests.helpers import tiny_spec
from worker.tbevents import EventWriter


def read_records(path: Path) -> Iterator[bytes]:
    """The TFRecords of an event file (uint64 length | uint32 masked crc32c(length) | bytes |
    uint32 masked crc32c(bytes), little-endian), with both checksums verified."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        record = data[offset + 12 : offset + 12 + length]
        (record_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        if header_crc != masked_crc32c(header) or record_crc != masked_crc32c(record):
            raise ValueError(f"{path}: corrupt record at byte {offset}")
        yield record
        offset += 16 + length


def test_crc32c_known_values():
    # RFC 3720, B.4 test vectors.
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(bytes([0xFF] * 32)) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E


def test_tensorboard_reads_what_we_write(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = EventWriter(tmp_path / "run")
    writer.add_scalars([("train/loss", 1, 0.75), ("train/loss", 2, 0.5), ("val/accuracy", 2, 0.9)])
    writer.add_scalars([("train/loss", 3, 0.25)])
    assert len(list(read_records(writer.path))) == 5  # the version record and four scalars
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train/loss", "val/accuracy"]
    loss = [(e.step, round(e.value, 6)) for e in events.Scalars("train/loss")]
    assert loss == [(1, 0.75), (2, 0.5), (3, 0.25)]
    assert [e.value for e in events.Scalars("val/accuracy")] == [pytest.approx(0.9)]


def test_a_corrupt_record_is_detected(tmp_path):
    writer = EventWriter(tmp_path)
    writer.add_scalars([("train/loss", 1, 0.5)])
    data = bytearray(writer.path.read_bytes())
    data[-6] ^= 0xFF
    writer.path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt record"):
        list(read_records(writer.path))


@pytest.mark.e2e
def test_a_jobs_event_files_download_as_a_tarball(client, settings, worker, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.test_e2e import TERMINAL, wait_for_status

    spec = tiny_spec(
        training={"epochs": 2, "tensorboard": True}, resources={"queue": settings.default_queue}
    )
    job_id = client.post("/api/v1/jobs", json=spec).json["id"]
    assert wait_for_status(client, job_id, TERMINAL)["status"] == "succeeded"
    response = client.get(f"/api/v1/jobs/{job_id}/tensorboard")
    assert response.status_code == 200 and response.mimetype == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(response.data)) as archive:
        names = archive.getnames()
        archive.extractall(tmp_path, filter="data")
    assert len(names) == 1 and names[0].startswith(f"job-{job_id}/attempt-1/events.out.tfevents.")
    events = EventAccumulator(str(Path(tmp_path, f"job-{job_id}", "attempt-1")))
    events.Reload()
    metrics = client.get(f"/api/v1/jobs/{job_id}/metrics?split=train&name=loss").json["metrics"]
    steps = sorted({m["step"] for m in metrics})
    assert sorted({e.step for e in events.Scalars("train/loss")}) == steps
    assert "val/accuracy" in events.Tags()["scalars"]


def test_a_job_without_event_files_is_a_404(client, settings):
    spec = tiny_spec(resources={"queue": "nobody-listens"})
    job_id = client.post("/api/v1/jobs", json=spec).json["id"]
    response = client.get(f"/api/v1/jobs/{job_id}/tensorboard")
    assert response.status_code == 404
    assert "training.tensorboard" in response.json["error"]["message"]
