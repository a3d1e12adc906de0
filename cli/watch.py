"""Watching a job to its end (submit and retry with --wait or --follow): polls the job detail
and draws the progress the API computed."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from cli.client import Client
from cli.common import call
from shared.protocol import TERMINAL_STATUSES

wait_option = click.option(
    "--wait", is_flag=True, help="Wait for the job to finish; exit 1 unless it succeeds."
)
follow_option = click.option(
    "--follow",
    "follow_",
    is_flag=True,
    help="Like --wait, with a live progress bar (epoch, step, loss, ETA).",
)


def wait_for(client: Client, job_id: int, as_json: bool, poll: float = 0.5) -> dict[str, Any]:
    last = None
    while True:
        job = call(client.get, f"/api/v1/jobs/{job_id}")
        progress = (job["status"], job["epoch"], job["step"])
        if progress != last and not as_json:
            loss = job["latest_metrics"].get("train/loss", {}).get("value")
            extra = f" loss {loss:.4f}" if loss is not None else ""
            click.echo(
                f"job {job_id}: {job['status']} epoch {job['epoch']} step {job['step']}{extra}"
            )
            last = progress
        if job["status"] in TERMINAL_STATUSES:
            return dict(job)
        time.sleep(poll)


def progress_snapshot(job: dict[str, Any]) -> dict[str, Any]:
    """What --follow shows of a job detail: epoch, step, newest loss, and the API's
    `progress` (the fraction done and the seconds left, as the jobs board shows them)."""
    sent = job["progress"]
    return {
        "id": job["id"],
        "status": job["status"],
        "attempt": job["attempt"],
        "epoch": job["epoch"],
        "epochs": job["spec"].get("training", {}).get("epochs") or None,
        "step": job["step"],
        "loss": job["latest_metrics"].get("train/loss", {}).get("value"),
        "progress": sent["fraction"],
        "eta_seconds": sent["eta_seconds"],
    }


def progress_line(p: dict[str, Any], width: int = 24) -> str:
    if p["progress"] is None:
        bar = "[" + "?" * width + "]     "
    else:
        done = int(round(p["progress"] * width))
        bar = f"[{'#' * done}{'-' * (width - done)}] {p['progress'] * 100:3.0f}%"
    epochs = f"/{p['epochs']}" if p["epochs"] else ""
    loss = f"  loss {p['loss']:.4f}" if p["loss"] is not None else ""
    eta = ""
    if p["eta_seconds"] is not None:
        minutes, seconds = divmod(int(p["eta_seconds"]), 60)
        eta = f"  ETA {minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
    return (
        f"job {p['id']} {p['status']:<9} {bar}  epoch {p['epoch']}{epochs}  "
        f"step {p['step']}{loss}{eta}"
    )


def follow(client: Client, job_id: int, as_json: bool, poll: float = 0.5) -> dict[str, Any]:
    """Poll the job until it ends, showing a progress bar (redrawn in place on a terminal,
    a line per change otherwise; with --json a JSON line per change)."""
    tty = not as_json and sys.stdout.isatty()
    last: tuple[Any, ...] | None = None
    while True:
        job = call(client.get, f"/api/v1/jobs/{job_id}")
        p = progress_snapshot(job)
        key = (p["status"], p["attempt"], p["epoch"], p["step"])
        if as_json and key != last:
            click.echo(json.dumps({"progress": p}))
        elif tty:
            click.echo("\r" + progress_line(p).ljust(100), nl=False)
        elif key != last:
            click.echo(progress_line(p))
        last = key
        if job["status"] in TERMINAL_STATUSES:
            if tty:
                click.echo()
            return dict(job)
        time.sleep(poll)


def finish_watch(job: dict[str, Any], as_json: bool) -> None:
    """Print a watched job's end (its JSON with --json) and exit 0 only if it succeeded."""
    if as_json:
        click.echo(json.dumps(job))
    else:
        metrics = {
            k: round(v["value"], 4)
            for k, v in job["latest_metrics"].items()
            if k.startswith("val/")
        }
        click.echo(f"job {job['id']} {job['status']} {json.dumps(metrics)}")
        if job["error"]:
            click.echo(job["error"], err=True)
    sys.exit(0 if job["status"] == "succeeded" else 1)


def watch(
    client: Client, created: dict[str, Any], wait: bool, follow_: bool, as_json: bool
) -> None:
    """After a submit or retry: print the new job, or watch it to its end."""
    if not (wait or follow_):
        click.echo(json.dumps(created) if as_json else f"job {created['id']} {created['status']}")
        return
    if not as_json:
        click.echo(f"job {created['id']} submitted")
    job = (follow if follow_ else wait_for)(client, created["id"], as_json)
    finish_watch(job, as_json)
