"""worker.devices: what a worker offers, from its settings (the CUDA probe runs in a child)."""

from __future__ import annotations

from dataclasses import replace

from shared.settings import Settings
from worker import devices


def test_device_kind_cpu_offers_cpu_processes_even_with_a_driver(monkeypatch):
    monkeypatch.setattr(devices, "nvidia_driver_present", lambda: True)
    monkeypatch.setattr(devices, "probe_cuda", lambda: [{"index": 0, "memory_bytes": 1 << 34}])
    settings = replace(Settings(), worker_devices=3)
    assert devices.probe(settings).kind == "cuda"
    info = devices.probe(replace(settings, worker_device_kind="cpu"))
    assert info.kind == "cpu" and info.count == 3 and info.visible == []
    assert [d["index"] for d in info.devices] == [0, 1, 2]


def test_the_kind_comes_from_the_environment():
    assert Settings.from_env({"SEQTRAIN_WORKER_DEVICE_KIND": "cpu"}).worker_device_kind == "cpu"
    assert Settings.from_env({}).worker_device_kind == "auto"
