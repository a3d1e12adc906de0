"""The trainer processes of a job on this machine, read from /proc (not from what SQL says).

Used by the fault-injection bench and the tests to check, independently of the service's
own records, that a job never has two trainers alive at once and that a stopped job left
none behind.
"""

from __future__ import annotations

from pathlib import Path


def trainer_pids(job_id: int, database_url: str | None = None) -> list[int]:
    """Live trainer processes of `job_id`: plain children (`python -m worker.trainer ...`),
    children of the fork-server (which take that title) and DDP ranks, not torchrun's agent.
    With `database_url`, only processes started with that DATABASE_URL (one deployment)."""
    needle = f"worker.trainer --job-id {job_id} ".encode()
    ours = f"DATABASE_URL={database_url}\0".encode() if database_url else b""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            if needle not in cmdline or b"worker.launch" in cmdline:
                continue
            if ours and ours not in (entry / "environ").read_bytes():
                continue
            pids.append(int(entry.name))
        except OSError:
            continue
    return pids
