"""A warm trainer fork-server: single-device trainers start in milliseconds, not seconds.

A fresh `python -m worker.trainer` spends about 2.3 s on a 2-core machine before its
first step: `import torch` (~1.3 s) and the lazy imports of the first optimizer (~0.95 s).
This server, started once per worker (`python -m worker.forkserver --socket PATH`), pays
that once: it imports the trainer, builds one optimizer on a dummy tensor **without running
any kernel** (forking after a kernel has started torch's thread pools deadlocks children),
and then forks one child per job.

Protocol (one Unix-socket connection per trainer, JSON lines):

    supervisor -> {"job_id": 12, "attempt": 1, "env": {...}, "log": "/path/attempt-1.log"}
    server     -> {"pid": 4242}                # the child leads its own process group
    server     -> {"returncode": 0}            # when it exits (-N: killed by signal N)

The supervisor signals the child's process group directly (cancel, drain, timeout), as it
does for a child of its own. If the connection closes first (the supervisor died), the
server kills the child's group; if the worker itself dies, the server notices within a
second, kills every child and exits. Multi-device jobs (torchrun) never come here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.protocol import SUPERVISOR_PID_ENV

# How long a supervisor waits for the server to accept a job before starting a plain child.
CONNECT_TIMEOUT_SECONDS = 2.0


# ---------------------------------------------------------------- the supervisor's side


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
        import subprocess

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


def start_trainer(
    socket_path: Path, job_id: int, attempt: int, env: dict[str, str], log: Path
) -> ForkedTrainer | None:
    """Ask the server for a trainer; None when no server answers (start a plain child then)."""
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


# ---------------------------------------------------------------- the server


@dataclass
class Child:
    pid: int
    conn: socket.socket


def _warm_up() -> None:
    """Import everything a trainer needs and build one optimizer, running no kernel."""
    import torch

    import worker.trainer  # noqa: F401  (the trainer's own imports: zoo, data, tokenizers)

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.empty(1))], lr=1e-3, fused=True)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _child(request: dict[str, Any], server_pid: int) -> None:
    """In the forked child: become a trainer process and never return."""
    code = 1
    try:
        os.setsid()  # its own process group, which the supervisor signals
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.environ.update(request["env"])
        os.environ[SUPERVISOR_PID_ENV] = str(server_pid)  # die with the server
        args = ["--job-id", str(int(request["job_id"])), "--attempt", str(int(request["attempt"]))]
        # Keep /proc/<pid>/environ intact: the title fits in the server's own argv.
        os.environ["SPT_NOENV"] = "1"
        import setproctitle

        setproctitle.setproctitle(f"python -m worker.trainer {' '.join(args)} (forked)")
        from worker import trainer

        try:
            code = trainer.main(args) or 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(socket_path: Path) -> None:
    parent = os.getppid()
    _warm_up()
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    os.chmod(socket_path, 0o600)
    listener.listen(16)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, Child] = {}  # pid -> child
    by_conn: dict[int, Child] = {}  # connection fd -> child
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print(f"fork-server ready on {socket_path}", flush=True)
    while not stop and os.getppid() == parent:
        for key, _ in selector.select(timeout=0.2):
            if key.fileobj is listener:
                with contextlib.suppress(BlockingIOError):
                    conn, _ = listener.accept()
                    child = _accept(conn, os.getpid(), listener, selector)
                    if child is not None:
                        children[child.pid] = child
                        by_conn[child.conn.fileno()] = child
                        selector.register(child.conn, selectors.EVENT_READ)
            else:  # a supervisor hung up: its trainer must not outlive it
                child = by_conn.pop(key.fd)
                selector.unregister(child.conn)
                _kill_group(child.pid)
        _reap(children, by_conn, selector)
    for child in children.values():  # the worker is gone or stopping
        _kill_group(child.pid)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()


def _accept(
    conn: socket.socket,
    server_pid: int,
    listener: socket.socket,
    selector: selectors.BaseSelector,
) -> Child | None:
    conn.settimeout(5)
    try:
        buffer = b""
        while b"\n" not in buffer:
            chunk = conn.recv(65536)
            if not chunk:
                conn.close()
                return None
            buffer += chunk
        request = json.loads(buffer.split(b"\n", 1)[0])
    except (OSError, ValueError):
        conn.close()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        selector.close()
        listener.close()
        conn.close()
        _child(request, server_pid)
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    conn.setblocking(False)
    return Child(pid, conn)


def _reap(
    children: dict[int, Child], by_conn: dict[int, Child], selector: selectors.BaseSelector
) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        child = children.pop(pid, None)
        if child is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if by_conn.pop(child.conn.fileno(), None) is not None:
            selector.unregister(child.conn)
            with contextlib.suppress(OSError):
                child.conn.setblocking(True)
                child.conn.sendall(json.dumps({"returncode": code}).encode() + b"\n")
        child.conn.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.forkserver")
    parser.add_argument("--socket", type=Path, required=True)
    args = parser.parse_args(argv)
    serve(args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------- the worker's handle


class Server:
    """The worker's fork-server process: started when the worker is ready, stopped with it."""

    def __init__(self, log_path: Path) -> None:
        import subprocess
        import tempfile
        import uuid

        self.socket = Path(tempfile.gettempdir()) / f"seqtrain-fork-{uuid.uuid4().hex[:12]}.sock"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker.forkserver", "--socket", str(self.socket)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def ready(self) -> Path | None:
        """The socket, once the server is warm and alive."""
        if self.proc.poll() is None and self.socket.exists():
            return self.socket
        return None

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()


_server: Server | None = None


def launch(log_path: Path) -> Server:
    global _server
    _server = Server(log_path)
    return _server


def ready_socket() -> Path | None:
    return _server.ready() if _server is not None else None


def shutdown() -> None:
    if _server is not None:
        _server.stop()
