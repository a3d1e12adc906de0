"""Every setting in one object, read from environment variables with documented defaults.

No configuration means: SQLite under ./var/, Redis at the URL `seqtrain up` starts (or
redis://127.0.0.1:6379/0), artifacts under ./var/artifacts.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    """Service settings. Build with `Settings.from_env()`; override fields in tests."""

    # Where local state lives when nothing else is configured.
    var_dir: Path = Path("var")
    # SQLAlchemy URL; PostgreSQL in production: postgresql+psycopg://user@host/db
    database_url: str = "sqlite:///var/seqtrain.db"
    # Redis broker (Celery transport + pub/sub).
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Root of the artifact store: checkpoints, logs. A shared mount when several hosts run workers.
    artifact_root: Path = Path("var/artifacts")
    # Celery queue a job goes to when its spec names none.
    default_queue: str = "default"
    # Seconds a running attempt's lease lasts without a heartbeat.
    lease_seconds: float = 60.0
    # Seconds between supervisor heartbeats (lease renewals).
    heartbeat_seconds: float = 5.0
    # Seconds between the supervisor's checks of the cancel flag.
    cancel_poll_seconds: float = 0.2
    # Seconds between SIGTERM and SIGKILL when stopping a trainer.
    kill_grace_seconds: float = 1.0
    # Redis redelivers an unacknowledged task after this many seconds; redelivery is a no-op.
    visibility_timeout_seconds: int = 900
    # Signs status-page session cookies. Empty: generated once into <var_dir>/secret-key.
    secret_key: str = ""
    # Send session cookies over HTTPS only (set behind a TLS-terminating proxy).
    secure_cookies: bool = False
    # Failed sign-ins (bad tokens) per client address per minute before 429.
    auth_failure_limit: int = 20
    # Largest request body accepted by the JSON API, in bytes.
    max_request_bytes: int = 1 << 20
    # Most submissions one API process commits and enqueues together (1: each on its own).
    submit_batch: int = 64
    # Largest dataset upload, in bytes.
    max_dataset_bytes: int = 200 << 20
    # Devices a worker offers one job: CPU processes for gloo DDP; GPUs are probed instead.
    worker_devices: int = 1
    # Seconds between reconciler passes (lost queue messages, expired leases).
    reconcile_seconds: float = 5.0
    # A queued job whose message is on no Redis list this many seconds after its enqueue
    # is enqueued again.
    enqueue_grace_seconds: float = 10.0
    # A worker silent for this many seconds is shown as lost.
    worker_stale_seconds: float = 30.0
    # Run the reconciler loop inside each worker (off: run `seqtrain reconcile` instead).
    worker_reconciler: bool = True
    # Seconds an API process reuses the worker list it read for the submit-time placement check.
    registry_cache_seconds: float = 2.0
    # Start single-device trainers from a warm fork-server (torch already imported).
    forkserver: bool = True
    # The address other workers reach this one at for a multi-node job's rendezvous (node 0
    # hosts it on a free port); 127.0.0.1 serves workers on one machine only.
    node_address: str = "127.0.0.1"
    # Seconds a multi-node job's node 0 waits for all its workers before it gives the job back.
    reserve_seconds: float = 60.0
    # Worker identity written into leases and events.
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def session_secret(self) -> str:
        """The configured secret, or one generated once and kept in <var_dir>/secret-key (0600)."""
        if self.secret_key:
            return self.secret_key
        path = self.var_dir / "secret-key"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    @classmethod
    def from_env(cls) -> Settings:
        var_dir = Path(os.environ.get("SEQTRAIN_VAR_DIR", "var"))
        return cls(
            var_dir=var_dir,
            database_url=os.environ.get("DATABASE_URL") or f"sqlite:///{var_dir / 'seqtrain.db'}",
            redis_url=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
            artifact_root=Path(os.environ.get("ARTIFACT_ROOT") or var_dir / "artifacts"),
            default_queue=os.environ.get("SEQTRAIN_DEFAULT_QUEUE", "default"),
            lease_seconds=_env_float("SEQTRAIN_LEASE_SECONDS", 60.0),
            heartbeat_seconds=_env_float("SEQTRAIN_HEARTBEAT_SECONDS", 5.0),
            cancel_poll_seconds=_env_float("SEQTRAIN_CANCEL_POLL_SECONDS", 0.2),
            kill_grace_seconds=_env_float("SEQTRAIN_KILL_GRACE_SECONDS", 1.0),
            visibility_timeout_seconds=_env_int("SEQTRAIN_VISIBILITY_TIMEOUT", 900),
            secret_key=os.environ.get("SEQTRAIN_SECRET_KEY", ""),
            secure_cookies=os.environ.get("SEQTRAIN_SECURE_COOKIES", "") in ("1", "true", "yes"),
            auth_failure_limit=_env_int("SEQTRAIN_AUTH_FAILURE_LIMIT", 20),
            max_request_bytes=_env_int("SEQTRAIN_MAX_REQUEST_BYTES", 1 << 20),
            submit_batch=max(1, _env_int("SEQTRAIN_SUBMIT_BATCH", 64)),
            max_dataset_bytes=_env_int("SEQTRAIN_MAX_DATASET_BYTES", 200 << 20),
            worker_devices=_env_int("SEQTRAIN_WORKER_DEVICES", 1),
            reconcile_seconds=_env_float("SEQTRAIN_RECONCILE_SECONDS", 5.0),
            enqueue_grace_seconds=_env_float("SEQTRAIN_ENQUEUE_GRACE_SECONDS", 10.0),
            worker_stale_seconds=_env_float("SEQTRAIN_WORKER_STALE_SECONDS", 30.0),
            worker_reconciler=os.environ.get("SEQTRAIN_WORKER_RECONCILER", "1")
            not in ("0", "false", "no"),
            registry_cache_seconds=_env_float("SEQTRAIN_REGISTRY_CACHE_SECONDS", 2.0),
            forkserver=os.environ.get("SEQTRAIN_FORKSERVER", "1") not in ("0", "false", "no"),
            node_address=os.environ.get("SEQTRAIN_NODE_ADDRESS") or "127.0.0.1",
            reserve_seconds=_env_float("SEQTRAIN_RESERVE_SECONDS", 60.0),
            worker_name=os.environ.get("SEQTRAIN_WORKER_NAME")
            or f"{socket.gethostname()}:{os.getpid()}",
        )
