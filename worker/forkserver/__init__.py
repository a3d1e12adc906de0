"""A warm trainer fork-server: single-device trainers start in milliseconds, not seconds.

A fresh `python -m worker.trainer` spends about 2.3 s on a 2-core machine before its
first step: `import torch` (~1.3 s) and the lazy imports of the first optimizer (~0.95 s).
The server, started once per worker (`python -m worker.forkserver --socket PATH`), pays
that once: it imports the trainer, builds one optimizer on a dummy tensor **without running
any kernel** (forking after a kernel has started torch's thread pools deadlocks children),
and then forks one child per job, which runs `worker.trainer.run` as a fresh trainer would.

Protocol (one Unix-socket connection per trainer, JSON lines):

    supervisor -> {"job_id": 12, "attempt": 1, "env": {...}, "log": "/path/attempt-1.log"}
    server     -> {"pid": 4242}                # the child leads its own process group
    server     -> {"returncode": 0}            # when it exits (-N: killed by signal N)

The supervisor signals the child's process group directly (cancel, drain, timeout), as it
does for a child of its own. If the connection closes first (the supervisor died), the
server kills the child's group; if the worker itself dies, the server notices within a
second, kills every child and exits. Multi-device jobs (torchrun) never come here.

client.py    the worker's side, torch-free: ForkServer (the server process a worker starts
             and stops, asked for trainers) and ForkedTrainer (a forked child, Popen-like)
server.py    the server: warm up, accept requests, fork trainers, reap them
__main__.py  python -m worker.forkserver --socket PATH
"""
