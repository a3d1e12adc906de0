"""How a trainer child is started: argv and environment overrides for the supervisor.

    argv, env = trainer_command(spec, job_id, attempt, devices)

One device: `python -m worker.trainer --job-id J --attempt A`. N devices: `python -m
worker.launch <torchrun options> -m worker.trainer --job-id J --attempt A`, which runs
torchrun's agent (`torch.distributed.run`) in its own process with N ranks: one node,
a c10d rendezvous on 127.0.0.1 (torchrun's `--standalone` would use "localhost", which may
resolve elsewhere), no restarts (the service's attempts are the retries). Around the agent
this module adds what the supervisor relies on:

- it dies with the supervisor (PR_SET_PDEATHSIG); each rank dies with it in turn;
- SIGUSR1 (drain) is passed to rank 0, and the ranks agree to stop at the same step;
- it exits with the exit code of the rank that failed first (3 fenced, 4 failed, 5
  drained, 75 retry; torchrun alone exits 1 for any failure), after printing torchrun's
  report, which carries the failing rank's traceback;
- SIGTERM reaches every rank (torchrun's agent stops its workers), so cancel stops them all.

A multi-node attempt (resources.nodes > 1, given as a `NodePlan`) always goes through the
launcher, on every node: `--nnodes K --node-rank R` with a static rendezvous at node 0's
address and port (its TCP store), so node ranks are the ones reserved in SQL and the global
ranks follow them (node 0 holds global rank 0, the only one that writes).

Importing this module does not import torch (the Celery process calls trainer_command).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.protocol import RANK_DIR_ENV, SUPERVISOR_PID_ENV
from shared.settings import Settings
from shared.spec import JobSpec
from worker.devices import DeviceInfo


@dataclass(frozen=True)
class NodePlan:
    """This worker's place in a multi-node attempt: its node rank of `nodes`, and node 0's
    rendezvous endpoint."""

    nodes: int
    node_rank: int
    master_addr: str
    master_port: int
    # How long a node's agent waits for the others to meet at the rendezvous.
    rendezvous_seconds: int = 60


def trainer_command(
    spec: JobSpec,
    job_id: int,
    attempt: int,
    devices: DeviceInfo,
    node: NodePlan | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The child's argv and the environment variables to set on top of the supervisor's."""
    wanted = spec.resources.devices
    trainer = ["-m", "worker.trainer", "--job-id", str(job_id), "--attempt", str(attempt)]
    env: dict[str, str] = {}
    if devices.kind == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices.visible[:wanted])
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU worker's trainer never picks up a GPU
    if wanted <= 1 and node is None:
        return [sys.executable, *trainer], env
    # Intra-op threads per rank: the cores shared out (torchrun would set 1 for every rank).
    configured = Settings.from_env().torch_threads
    threads = str(configured or max(1, (os.cpu_count() or 1) // wanted))
    env.update(OMP_NUM_THREADS=threads, SEQTRAIN_TORCH_THREADS=threads)
    if node is not None:
        launcher = [
            sys.executable,
            "-m",
            "worker.launch",
            "--nnodes",
            str(node.nodes),
            "--node-rank",
            str(node.node_rank),
            "--nproc-per-node",
            str(wanted),
            "--rdzv-backend",
            "static",
            "--master-addr",
            node.master_addr,
            "--master-port",
            str(node.master_port),
            "--rdzv-conf",
            f"timeout={node.rendezvous_seconds}",
            "--rdzv-id",
            f"job-{job_id}-attempt-{attempt}",
            "--max-restarts",
            "0",
        ]
        return [*launcher, *trainer], env
    launcher = [sys.executable, "-m", "worker.launch", *single_node_options(wanted)]
    return [*launcher, "--rdzv-id", f"job-{job_id}-attempt-{attempt}", *trainer], env


def single_node_options(processes: int) -> list[str]:
    """torchrun's options for `processes` ranks on this machine: a c10d rendezvous pinned to
    127.0.0.1 (torchrun's `--standalone` says "localhost", which may resolve elsewhere) and
    no restarts (the service's attempts are the retries)."""
    return [
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(processes),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "127.0.0.1:0",
        "--local-addr",
        "127.0.0.1",
        "--max-restarts",
        "0",
    ]


def first_failure(folder: Path) -> int:
    """The exit code of the rank that failed first (1 when none left one: it crashed)."""
    failed = []
    for path in folder.glob("rank-*.exit"):
        with contextlib.suppress(OSError, ValueError):
            code = int(path.read_text())
            if code != 0:
                failed.append((path.stat().st_mtime, code))
    return min(failed)[1] if failed else 1


def die_with_parent(check_parent: bool = True) -> None:
    """Ask Linux to SIGTERM this process when its parent (the supervisor, or the fork-server
    named by SEQTRAIN_SUPERVISOR_PID) dies, so nothing outlives its worker. With
    `check_parent`, exit at once if that parent is already gone."""
    expected = os.environ.get(SUPERVISOR_PID_ENV)
    if not sys.platform.startswith("linux") or not expected:
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if check_parent and os.getppid() != int(expected):  # it died before prctl took effect
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    """Run torchrun's agent here with `argv` (torchrun's options, then the trainer's)."""
    die_with_parent()
    folder = Path(tempfile.mkdtemp(prefix="seqtrain-ranks-"))
    os.environ[RANK_DIR_ENV] = str(folder)  # the agent passes its environment to the ranks

    def drain(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((folder / "rank-0.pid").read_text()), signal.SIGUSR1)

    signal.signal(signal.SIGUSR1, drain)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(sys.argv[1:] if argv is None else argv)
        return 0
    except ChildFailedError as exc:
        print(f"a rank failed:\n{exc}", file=sys.stderr, flush=True)
        return first_failure(folder)
    except SignalException as exc:
        print(f"stopped by signal {exc.sigval}", file=sys.stderr, flush=True)
        return 128 + int(exc.sigval)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
