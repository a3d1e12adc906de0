"""/metrics: the service's figures in Prometheus' text format (never imports torch).

Who may read it: with SEQTRAIN_METRICS_TOKEN set, any client sending
`Authorization: Bearer <that token>` (Prometheus' `authorization` setting), and no one else;
without it, clients on the loopback only. The figures are read from SQL and Redis at each
scrape (a collector on the app's own registry, not the process-wide default one), so every
API process answers the same.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta

from flask import Blueprint, Response, current_app, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api import Services, stats
from api.errors import ApiError
from shared.infra.db import Database
from shared.infra.models import utcnow
from shared.infra.queue import queue_depths, redis_client
from shared.protocol import JobStatus
from shared.sweeps.store import trial_counts

bp = Blueprint("metrics", __name__)
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
REGISTRY = "seqtrain.metrics"  # the app.extensions key of the app's CollectorRegistry
# Sweeps a scrape reports: running ones, and those finished this long ago at most.
SWEEPS_FINISHED_WITHIN = timedelta(hours=24)


@bp.record_once
def _configure(state: object) -> None:
    app = state.app  # type: ignore[attr-defined]
    app.config.setdefault("METRICS_TOKEN", app.extensions["seqtrain"].settings.metrics_token)
    registry = CollectorRegistry()
    registry.register(ServiceFigures(app.extensions["seqtrain"]))
    app.extensions[REGISTRY] = registry


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


class _LastLabel(str):
    """A label name that sorts after every other. `generate_latest` writes label names in
    sorted order; a bucket's bound goes last, `{status="failed",le="10"}`, as it always has
    on this endpoint."""

    __slots__ = ()

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return other != self


LE = _LastLabel("le")


def _bound(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def _labelled(
    name: str, help_text: str, label: str, samples: Iterable[tuple[object, float]]
) -> Metric:
    family = GaugeMetricFamily(name, help_text, labels=[label])
    for key, value in samples:
        family.add_metric([str(key)], value)
    return family


def _durations(histograms: dict[str, stats.Histogram]) -> Metric:
    name = "seqtrain_job_duration_seconds"
    family = Metric(
        name, "Seconds from a finished job's first start to its end, by final status.", "histogram"
    )
    for status, hist in sorted(histograms.items()):
        for bound, count in hist.buckets:
            family.add_sample(f"{name}_bucket", {"status": status, LE: _bound(bound)}, count)
        family.add_sample(f"{name}_bucket", {"status": status, LE: "+Inf"}, hist.count)
        family.add_sample(f"{name}_sum", {"status": status}, hist.total)
        family.add_sample(f"{name}_count", {"status": status}, hist.count)
    return family


def _sweep_trials(counts: Mapping[tuple[int, str], int]) -> Metric:
    """Each reported sweep's trials by status, every status (0 for none)."""
    family = GaugeMetricFamily(
        "seqtrain_sweep_trials",
        "Trials of each running (or recently finished) sweep, by status.",
        labels=["sweep", "status"],
    )
    for sweep in sorted({sweep for sweep, _ in counts}):
        statuses = [s.value for s in JobStatus]
        statuses += sorted({st for sw, st in counts if sw == sweep} - set(statuses))
        for status in statuses:
            family.add_metric([str(sweep), status], counts.get((sweep, status), 0))
    return family


def _scheduling(db: Database) -> list[Metric]:
    """Queued and running jobs by owner ("" for none, 0 for users without), and preemptions."""
    by_user = stats.jobs_by_user(db)
    return [
        _labelled(
            f"seqtrain_jobs_{status}",
            f'{status.capitalize()} jobs by owner ("" for jobs nobody owns).',
            "user",
            sorted(by_user[status].items()),
        )
        for status in (JobStatus.QUEUED, JobStatus.RUNNING)
    ] + [
        CounterMetricFamily(
            "seqtrain_preemptions",
            "Times a job was checkpointed and requeued to make room for another (the sum of "
            "jobs.preemptions).",
            value=stats.preemptions_total(db),
        )
    ]


class ServiceFigures(Collector):
    """Every metric family, each read once per scrape from SQL and Redis."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        families = self._read()
        yield from families
        yield GaugeMetricFamily(
            "seqtrain_metrics_scrape_seconds",
            "Time spent reading these figures.",
            value=time.perf_counter() - started,
        )

    def _read(self) -> list[Metric]:
        db, settings = self.svc.db, self.svc.settings
        jobs = stats.jobs_by_status(db)
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
        durations = stats.job_durations(db)
        workers = stats.workers_by_state(db, settings.worker_stale_seconds)
        speeds = stats.running_tokens_per_second(db)
        sweeps = trial_counts(db, finished_since=utcnow() - SWEEPS_FINISHED_WITHIN)
        return [
            _labelled("seqtrain_jobs", "Jobs by status.", "status", sorted(jobs.items())),
            *_scheduling(db),
            GaugeMetricFamily("seqtrain_redis_up", "1 when Redis answered.", value=up),
            _labelled(
                "seqtrain_queue_depth",
                "Messages waiting on each Celery queue (not yet taken by a worker).",
                "queue",
                sorted(depths.items()),
            ),
            _durations(durations),
            GaugeMetricFamily(
                "seqtrain_workers_live", "Workers whose heartbeat is recent.", value=workers["live"]
            ),
            GaugeMetricFamily(
                "seqtrain_workers_busy", "Live workers training a job.", value=workers["busy"]
            ),
            _labelled(
                "seqtrain_training_tokens_per_second",
                "Newest training throughput (real tokens/s) of each running job.",
                "job_id",
                sorted(speeds.items()),
            ),
            GaugeMetricFamily(
                "seqtrain_training_tokens_per_second_total",
                "Sum over running jobs of their newest training throughput.",
                value=sum(speeds.values()),
            ),
            _sweep_trials(sweeps),
        ]


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus scrape target (not part of the JSON API's OpenAPI document)."""
    _allowed()
    body = generate_latest(current_app.extensions[REGISTRY])
    return Response(body, mimetype=None, content_type=CONTENT_TYPE_PLAIN_0_0_4)
