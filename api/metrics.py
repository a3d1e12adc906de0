"""/metrics: the service's figures in Prometheus' text format (never imports torch).

Who may read it: with SEQTRAIN_METRICS_TOKEN set, any client sending
`Authorization: Bearer <that token>` (Prometheus' `authorization` setting), and no one else;
without it, clients on the loopback only. The figures are read from SQL and Redis at each
scrape, so every API process answers the same.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterable

from flask import Blueprint, Response, current_app, request

from api import services, stats
from api.errors import ApiError
from shared.infra.queue import queue_depths, redis_client

bp = Blueprint("metrics", __name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@bp.record_once
def _configure(state: object) -> None:
    app = state.app  # type: ignore[attr-defined]
    app.config.setdefault("METRICS_TOKEN", os.environ.get("SEQTRAIN_METRICS_TOKEN", ""))


def _allowed() -> None:
    token = current_app.config["METRICS_TOKEN"]
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise ApiError(
                401,
                "unauthorized",
                "send the metrics token: Authorization: Bearer <SEQTRAIN_METRICS_TOKEN>",
            )
    elif request.remote_addr not in LOOPBACK:
        raise ApiError(
            403, "forbidden", "/metrics answers the loopback only; set SEQTRAIN_METRICS_TOKEN"
        )


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def exposition() -> str:
    """Every metric family, each read once."""
    svc = services()
    db, settings = svc.db, svc.settings
    lines: list[str] = []
    lines += _family(
        "seqtrain_jobs",
        "gauge",
        "Jobs by status.",
        (
            f"seqtrain_jobs{_labels(status=s)} {n}"
            for s, n in sorted(stats.jobs_by_status(db).items())
        ),
    )
    queues = stats.queues_in_use(db) | {settings.default_queue}
    up = 1
    try:
        client = redis_client(settings.redis_url)
        try:
            depths = queue_depths(client, queues)
        finally:
            client.close()
    except Exception:  # Redis down: say so, still report what SQL knows
        depths, up = {}, 0
    lines += _family(
        "seqtrain_redis_up", "gauge", "1 when Redis answered.", [f"seqtrain_redis_up {up}"]
    )
    lines += _family(
        "seqtrain_queue_depth",
        "gauge",
        "Messages waiting on each Celery queue (not yet taken by a worker).",
        (f"seqtrain_queue_depth{_labels(queue=q)} {n}" for q, n in sorted(depths.items())),
    )
    samples = []
    for status, hist in sorted(stats.job_durations(db).items()):
        for bound, count in hist.buckets:
            samples.append(
                f"seqtrain_job_duration_seconds_bucket{_labels(status=status, le=_number(bound))} {count}"
            )
        samples.append(
            f"seqtrain_job_duration_seconds_bucket{_labels(status=status, le='+Inf')} {hist.count}"
        )
        samples.append(f"seqtrain_job_duration_seconds_sum{_labels(status=status)} {hist.total}")
        samples.append(f"seqtrain_job_duration_seconds_count{_labels(status=status)} {hist.count}")
    lines += _family(
        "seqtrain_job_duration_seconds",
        "histogram",
        "Seconds from a finished job's first start to its end, by final status.",
        samples,
    )
    workers = stats.workers_by_state(db, settings.worker_stale_seconds)
    lines += _family(
        "seqtrain_workers_live",
        "gauge",
        "Workers whose heartbeat is recent.",
        [f"seqtrain_workers_live {workers['live']}"],
    )
    lines += _family(
        "seqtrain_workers_busy",
        "gauge",
        "Live workers training a job.",
        [f"seqtrain_workers_busy {workers['busy']}"],
    )
    speeds = stats.running_tokens_per_second(db)
    lines += _family(
        "seqtrain_training_tokens_per_second",
        "gauge",
        "Newest training throughput (real tokens/s) of each running job.",
        (
            f"seqtrain_training_tokens_per_second{_labels(job_id=j)} {v}"
            for j, v in sorted(speeds.items())
        ),
    )
    lines += _family(
        "seqtrain_training_tokens_per_second_total",
        "gauge",
        "Sum over running jobs of their newest training throughput.",
        [f"seqtrain_training_tokens_per_second_total {sum(speeds.values())}"],
    )
    return "\n".join(lines) + "\n"


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus scrape target (not part of the JSON API's OpenAPI document)."""
    _allowed()
    started = time.perf_counter()
    body = exposition()
    body += (
        "# HELP seqtrain_metrics_scrape_seconds Time spent reading these figures.\n"
        "# TYPE seqtrain_metrics_scrape_seconds gauge\n"
        f"seqtrain_metrics_scrape_seconds {time.perf_counter() - started:.6f}\n"
    )
    return Response(body, mimetype=None, content_type=CONTENT_TYPE)
