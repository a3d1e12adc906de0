"""The fork-server process: warm up once, then fork one trainer per request and report its
exit (`python -m worker.forkserver --socket PATH`; the protocol is in the package's doc)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.protocol import SUPERVISOR_PID_ENV


@dataclass
class Child:
    pid: int
    conn: socket.socket


def _warm_up() -> None:
    """Import everything a trainer needs and build one optimizer, running no kernel."""
    import torch

    import worker.trainer  # noqa: F401  (the trainer's own imports: zoo, data, tokenizers)

    # A pretrained job's libraries (seconds to import), when installed.
    with contextlib.suppress(ImportError):
        from shared.zoo import pretrained

        pretrained.warm_up()

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.empty(1))], lr=1e-3, fused=True)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _child(request: dict[str, Any], server_pid: int) -> None:
    """In the forked child: become a trainer process, run it as `python -m worker.trainer`
    would (its exit file and teardown included), and exit with its code; never return."""
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
            code = trainer.run(args)
        except SystemExit as exc:  # argparse, or a trainer that exits by itself
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
