"""The worker's side of the fork-server: start it, ask it for trainers, stop it. Torch-free:
this runs in the Celery process."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# How long a supervisor waits for the server to accept a job before starting a plain child.
CONNECT_TIMEOUT_SECONDS = 2.0


class ForkedTrainer:
    """A trainer forked by the server, with the parts of `subprocess.Popen` the supervisor
    uses: `pid` (also its process group), `wait(timeout)`, `poll()`, `returncode`."""

    def __init__(self, conn: socket.socket, pid: int, buffer: bytes) -> None:
        self.conn, self.pid, self.buffer = conn, pid, buffer
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._read(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"trainer {self.pid}", timeout or 0)
            self._read(left)
        return self.returncode

    def _read(self, timeout: float | None) -> None:
        while b"\n" not in self.buffer:
            self.conn.settimeout(timeout)
            try:
                chunk = self.conn.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            except OSError:
                chunk = b""
            if not chunk:  # the server is gone: the child died with it
                self.returncode = -signal.SIGKILL
                self.conn.close()
                return
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        self.returncode = int(json.loads(line)["returncode"])
        self.conn.close()


class ForkServer:
    """The worker's fork-server process: started when the worker is ready, stopped with it,
    and handed to each supervisor, which asks it for single-device trainers."""

    def __init__(self, log_path: Path) -> None:
        self.socket = Path(tempfile.gettempdir()) / f"seqtrain-fork-{uuid.uuid4().hex[:12]}.sock"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker.forkserver", "--socket", str(self.socket)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def ready(self) -> bool:
        """Whether the server is alive and warm (it binds its socket once warm)."""
        return self.proc.poll() is None and self.socket.exists()

    def start_trainer(
        self, job_id: int, attempt: int, env: dict[str, str], log: Path
    ) -> ForkedTrainer | None:
        """A trainer forked by the server, with `env` over the server's environment and its
        output appended to `log`; None while the server is not warm or does not answer (the
        caller starts a plain child then)."""
        if not self.ready():
            return None
        return request_trainer(self.socket, job_id, attempt, env, log)

    def stop(self) -> None:
        """Stop the server; it kills the trainers it still has."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()


def request_trainer(
    socket_path: Path, job_id: int, attempt: int, env: dict[str, str], log: Path
) -> ForkedTrainer | None:
    """Ask the server on `socket_path` for a trainer; None when no server answers."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(CONNECT_TIMEOUT_SECONDS)
    try:
        conn.connect(str(socket_path))
        request = {"job_id": job_id, "attempt": attempt, "env": env, "log": str(log)}
        conn.sendall(json.dumps(request).encode() + b"\n")
        buffer = b""
        while b"\n" not in buffer:
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError("fork-server closed the connection")
            buffer += chunk
    except OSError:
        conn.close()
        return None
    line, rest = buffer.split(b"\n", 1)
    return ForkedTrainer(conn, int(json.loads(line)["pid"]), rest)
