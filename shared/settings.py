"""Every setting in one object, read from environment variables with documented defaults.

No configuration means: SQLite under ./var/, Redis at the URL `seqtrain up` starts (or
redis://127.0.0.1:6379/0), artifacts under ./var/artifacts.

Each setting is declared once, as a field of `Settings`: its environment variable, its
default, the parser of the variable's text and a description. README.md's configuration
table is generated from the declarations (`python -m shared.settings --markdown`) and
tests/test_settings.py checks that it is current.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A parser turns a variable's text into the field's value; on bad text it raises a
# ValueError whose message says what was expected ("an integer").


def integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("an integer") from None


def number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("a number") from None


def at_least_one(raw: str) -> int:
    return max(1, integer(raw))


def not_negative(raw: str) -> float:
    return max(0.0, number(raw))


def flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("1 or 0 (true/false, yes/no, on/off)")


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError("one of " + ", ".join(allowed))
        return value

    return parse


def artifact_location(raw: str) -> str:
    """A directory, or `s3://bucket[/prefix]`."""
    value = raw.strip()
    if value.startswith("s3://"):
        bucket = value[len("s3://") :].split("/", 1)[0]
        if not bucket:
            raise ValueError("a directory or s3://bucket/prefix")
    return value


def _worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def setting(
    env: str,
    default: Any = None,
    help: str = "",
    parse: Callable[[str], Any] = str,
    shown: str | None = None,
    factory: Callable[[], Any] | None = None,
    from_var_dir: Callable[[Path], Any] | None = None,
) -> Any:
    """A declared setting. `shown` replaces the default in the README table where the real
    default is not a constant; `from_var_dir` makes the default from SEQTRAIN_VAR_DIR when
    the variable is unset (from_env; a plain `Settings()` keeps `default`)."""
    metadata = {"env": env, "parse": parse, "help": help, "shown": shown, "var_dir": from_var_dir}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Service settings. Build with `Settings.from_env()`; override fields in tests."""

    database_url: str = setting(
        "DATABASE_URL",
        "sqlite:///var/seqtrain.db",
        "SQLAlchemy URL; PostgreSQL: `postgresql+psycopg://user:pass@host/db`",
        from_var_dir=lambda var_dir: f"sqlite:///{var_dir / 'seqtrain.db'}",
    )
    redis_url: str = setting(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "Celery broker and pub/sub",
        shown="`seqtrain up`: a private Redis it starts; otherwise `redis://127.0.0.1:6379/0`",
    )
    artifact_root: str = setting(
        "ARTIFACT_ROOT",
        "var/artifacts",
        "datasets, checkpoints, logs, TensorBoard files and uploaded models: a directory (a"
        " shared mount when workers run on several hosts) or an S3-compatible bucket,"
        " `s3://bucket/prefix`",
        artifact_location,
        from_var_dir=lambda var_dir: str(var_dir / "artifacts"),
    )
    s3_endpoint_url: str = setting(
        "SEQTRAIN_S3_ENDPOINT_URL",
        "",
        "the S3 endpoint for an `s3://` ARTIFACT_ROOT (MinIO, SeaweedFS, Ceph:"
        " `http://host:port`); unset: boto3's AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or AWS."
        " Credentials come the standard AWS way (AWS_ACCESS_KEY_ID, a profile, a role)",
    )
    s3_presign_seconds: int = setting(
        "SEQTRAIN_S3_PRESIGN_SECONDS",
        0,
        "with an `s3://` store, checkpoint downloads redirect to a presigned URL valid this"
        " long; 0: the API streams them",
        integer,
    )
    store_retry_seconds: float = setting(
        "SEQTRAIN_STORE_RETRY_SECONDS",
        120.0,
        "how long a write to an `s3://` store is retried while the store is unreachable",
        not_negative,
    )
    cache_bytes: int = setting(
        "SEQTRAIN_CACHE_BYTES",
        20 << 30,
        "the most SEQTRAIN_CACHE_DIR holds (datasets, checkpoints and base models from an"
        " `s3://` store, by content hash); the least recently used go first",
        integer,
    )
    var_dir: Path = setting("SEQTRAIN_VAR_DIR", Path("var"), "where the defaults above live", Path)
    api_url: str = setting("SEQTRAIN_URL", "http://127.0.0.1:8000", "the API the CLI talks to")
    api_token: str = setting(
        "SEQTRAIN_TOKEN", "", "the CLI's API token", shown="`var/dev-token` if present"
    )
    log_format: str = setting(
        "SEQTRAIN_LOG_FORMAT",
        "text",
        "`json`: one JSON object a log line (API and workers)",
        choice("text", "json"),
    )
    secret_key: str = setting(
        "SEQTRAIN_SECRET_KEY",
        "",
        "signs session cookies; set the same value on every API host",
        shown="generated once into `var/secret-key`",
    )
    secure_cookies: bool = setting(
        "SEQTRAIN_SECURE_COOKIES", False, "`1` behind HTTPS", flag, shown="off"
    )
    auth_failure_limit: int = setting(
        "SEQTRAIN_AUTH_FAILURE_LIMIT",
        20,
        "failed sign-ins per address, and per presented token, per minute before 429",
        integer,
    )
    auth_cache_seconds: float = setting(
        "SEQTRAIN_AUTH_CACHE_SECONDS",
        15.0,
        "each API process remembers a valid token or session this long (`0`: never); one"
        " revoked or ended elsewhere is refused within it",
        not_negative,
    )
    session_hours: float = setting(
        "SEQTRAIN_SESSION_HOURS",
        12.0,
        "a status-page sign-in ends this long after it began (logout, revoking its token or"
        " `seqtrain sessions end` end it sooner)",
        not_negative,
    )
    metrics_token: str = setting(
        "SEQTRAIN_METRICS_TOKEN",
        "",
        "bearer token that reads `/metrics` from anywhere (empty: the loopback only)",
        shown="none",
    )
    max_request_bytes: int = setting(
        "SEQTRAIN_MAX_REQUEST_BYTES", 1 << 20, "largest JSON request body", integer
    )
    max_streams_per_user: int = setting(
        "SEQTRAIN_MAX_STREAMS_PER_USER",
        20,
        "live job-page streams one user may hold open at once, across every API process"
        " (beyond: 429 with Retry-After, and the page polls; `0`: no streams)",
        integer,
    )
    submit_batch: int = setting(
        "SEQTRAIN_SUBMIT_BATCH",
        64,
        "most concurrent submissions one API process commits and enqueues together"
        " (`1`: each alone)",
        at_least_one,
    )
    max_dataset_bytes: int = setting(
        "SEQTRAIN_MAX_DATASET_BYTES", 200 << 20, "largest dataset upload (413 above it)", integer
    )
    max_model_bytes: int = setting(
        "SEQTRAIN_MAX_MODEL_BYTES",
        4 << 30,
        "largest pretrained-model upload (413 above it), and the most its archive may unpack to",
        integer,
    )
    cache_dir: Path = setting(
        "SEQTRAIN_CACHE_DIR",
        Path("var/cache"),
        "where workers and the API keep base models (unpacked), and datasets and checkpoints"
        " from an `s3://` store, once per content hash",
        Path,
        from_var_dir=lambda var_dir: var_dir / "cache",
    )
    default_queue: str = setting(
        "SEQTRAIN_DEFAULT_QUEUE",
        "default",
        "Celery's default queue (a spec's `resources.queue` decides where a job goes;"
        " `seqtrain worker -Q` which queues a worker takes)",
    )
    lease_seconds: float = setting(
        "SEQTRAIN_LEASE_SECONDS", 60.0, "lease of a running attempt without heartbeat", number
    )
    heartbeat_seconds: float = setting(
        "SEQTRAIN_HEARTBEAT_SECONDS", 5.0, "supervisor heartbeat interval", number
    )
    cancel_poll_seconds: float = setting(
        "SEQTRAIN_CANCEL_POLL_SECONDS", 0.2, "how often the supervisor checks for cancel", number
    )
    kill_grace_seconds: float = setting(
        "SEQTRAIN_KILL_GRACE_SECONDS",
        1.0,
        "SIGTERM to SIGKILL grace when stopping a trainer",
        number,
    )
    visibility_timeout_seconds: int = setting(
        "SEQTRAIN_VISIBILITY_TIMEOUT",
        900,
        "Redis redelivery of unacknowledged tasks (redelivery is a no-op)",
        integer,
    )
    torch_threads: int | None = setting(
        "SEQTRAIN_TORCH_THREADS",
        None,
        "intra-op threads of each trainer",
        integer,
        shown="torch's default",
    )
    worker_name: str = setting(
        "SEQTRAIN_WORKER_NAME",
        help="worker identity in leases, events and the workers page",
        shown="`host:pid`",
        factory=_worker_identity,
    )
    worker_devices: int = setting(
        "SEQTRAIN_WORKER_DEVICES",
        1,
        "CPU processes a CPU worker offers one job (gloo DDP above 1); GPUs are probed",
        integer,
    )
    worker_device_kind: str = setting(
        "SEQTRAIN_WORKER_DEVICE_KIND",
        "auto",
        "`auto`: GPUs when an NVIDIA driver is present, else CPU processes; `cpu`: CPU"
        " processes on a GPU machine too",
        choice("auto", "cpu"),
    )
    node_address: str = setting(
        "SEQTRAIN_NODE_ADDRESS",
        "127.0.0.1",
        "the address other workers reach this one at, as node 0 of a multi-node job"
        " (its rendezvous)",
    )
    reserve_seconds: float = setting(
        "SEQTRAIN_RESERVE_SECONDS",
        60.0,
        "how often a reserving multi-node job's node 0 checks that enough live workers"
        " could still join it (else it gives the attempt back)",
        number,
    )
    priority_aging: float = setting(
        "SEQTRAIN_PRIORITY_AGING",
        600.0,
        "seconds of waiting that raise a priority's queued jobs by one level (nothing starves)",
        number,
    )
    fair_share: bool = setting(
        "SEQTRAIN_FAIR_SHARE",
        True,
        "within a priority, a free worker takes the job of the owner with the least device"
        " time (running now, and past usage halved every hour) (`0`: the oldest job first)",
        flag,
    )
    preemption: bool = setting(
        "SEQTRAIN_PREEMPTION",
        True,
        "checkpoint and requeue a job to start one that outranks it",
        flag,
    )
    preempt_margin: int = setting(
        "SEQTRAIN_PREEMPT_MARGIN",
        20,
        "priority levels a waiting job must be above a running one",
        integer,
    )
    preempt_min_runtime: float = setting(
        "SEQTRAIN_PREEMPT_MIN_RUNTIME",
        60.0,
        "seconds an attempt runs before it may be preempted",
        number,
    )
    max_preemptions: int = setting(
        "SEQTRAIN_MAX_PREEMPTIONS",
        3,
        "times one job may be preempted; then it runs to its end",
        integer,
    )
    worker_reconciler: bool = setting(
        "SEQTRAIN_WORKER_RECONCILER",
        True,
        "run the reconciler loop inside each worker (`0`: run `seqtrain reconcile` instead)",
        flag,
    )
    reconcile_seconds: float = setting(
        "SEQTRAIN_RECONCILE_SECONDS", 5.0, "seconds between reconciler passes", number
    )
    enqueue_grace_seconds: float = setting(
        "SEQTRAIN_ENQUEUE_GRACE_SECONDS",
        10.0,
        "a queued job with no message on Redis this long after its enqueue is enqueued again",
        number,
    )
    worker_stale_seconds: float = setting(
        "SEQTRAIN_WORKER_STALE_SECONDS", 30.0, "a worker silent this long is shown as lost", number
    )
    registry_cache_seconds: float = setting(
        "SEQTRAIN_REGISTRY_CACHE_SECONDS",
        2.0,
        "how long an API process reuses the worker list for submit's placement check",
        number,
    )
    forkserver: bool = setting(
        "SEQTRAIN_FORKSERVER",
        True,
        "start single-device trainers from the worker's warm fork-server (`0`: a fresh"
        " `python -m worker.trainer` each time)",
        flag,
    )

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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `environ` (the process environment by default); an unset or empty
        variable leaves the default. A malformed value is a ValueError naming the variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            raw = environ.get(spec.metadata["env"], "")
            if raw != "":
                values[spec.name] = _parse(spec, raw)
        var_dir = values.get("var_dir", Path("var"))
        for spec in dataclasses.fields(cls):
            derive = spec.metadata["var_dir"]
            if derive is not None and spec.name not in values:
                values[spec.name] = derive(var_dir)
        return cls(**values)


def _parse(spec: dataclasses.Field[Any], raw: str) -> Any:
    try:
        return spec.metadata["parse"](raw)
    except ValueError as exc:
        name = spec.metadata["env"]
        raise ValueError(f"environment variable {name} must be {exc}, got {raw!r}") from None


def _shown_default(spec: dataclasses.Field[Any]) -> str:
    if spec.metadata["shown"] is not None:
        return str(spec.metadata["shown"])
    default = spec.default
    if isinstance(default, bool):
        return f"`{int(default)}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def markdown_table() -> str:
    """README.md's configuration table: one row a setting, in declaration order."""
    rows = ["| variable | default | what |", "|---|---|---|"]
    for spec in dataclasses.fields(Settings):
        env, text = spec.metadata["env"], spec.metadata["help"]
        rows.append(f"| `{env}` | {_shown_default(spec)} | {text} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m shared.settings --markdown")
    sys.stdout.write(markdown_table())
