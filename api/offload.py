"""CPU-bound work (torch predictions, loading a checkpoint) off the event loop.

Under gunicorn's gevent workers every request of a process shares one thread; a prediction
computed there would stall them all. `run(fn, ...)` hands it to gevent's pool of native
threads instead, and the greenlet that asked waits without blocking the others. One such
call at a time per process: torch spreads each over its own threads, and a lock of the
monkey-patched `threading` is not safe to contend between native threads. Outside gevent
(gthread, the test server) `run` calls `fn` in place.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

_serial: Any = None


def under_gevent() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def run(fn: Callable[..., R], *args: Any) -> R:
    """`fn(*args)`, on a native thread when the process runs gevent."""
    if not under_gevent():
        return fn(*args)
    import gevent
    from gevent.lock import Semaphore

    global _serial
    if _serial is None:
        _serial = Semaphore()
    with _serial:
        result: R = gevent.get_hub().threadpool.apply(fn, args)
    return result
