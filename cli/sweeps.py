"""`seqtrain sweeps` (or `seqtrain sweep`): hyperparameter sweeps through the API.

seqtrain sweep submit examples/sweep.yaml [--wait]
seqtrain sweeps list [--status running]
seqtrain sweeps show 3          (every trial: number, status, value, epochs, params)
seqtrain sweeps cancel 3
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from cli.client import Client
from cli.common import call, fail, json_option, load_spec, make_client, token_option, url_option

SWEEP_STATUSES = ("running", "succeeded", "failed", "cancelled")
POLL_SECONDS = 2.0


@click.group()
def sweeps() -> None:
    """Hyperparameter sweeps: submit, list, show, cancel."""


@click.group()
def sweep() -> None:
    """Hyperparameter sweeps (the same commands as `seqtrain sweeps`)."""


def _value(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{path}={_value(value)}" for path, value in params.items())


def _line(s: dict[str, Any]) -> str:
    counts = s["counts"]
    done = sum(counts[k] for k in ("succeeded", "failed", "cancelled", "pruned"))
    best = s["best_trial"]
    shown = f"best #{best['number']} {_value(best['value'])}" if best else "no best yet"
    return (
        f"{s['id']:>6}  {s['status']:<10} {done:>4}/{s['max_trials']:<4} trials  "
        f"{s['objective']['metric']} {shown}  {s['name']}"
    )


def _wait(client: Client, sweep_id: int, as_json: bool) -> dict[str, Any]:
    """Poll the sweep until it ends, printing a line when it changes."""
    last = None
    while True:
        body = call(client.get, f"/api/v1/sweeps/{sweep_id}")
        line = _line(body)
        if line != last and not as_json:
            click.echo(line)
            last = line
        if body["status"] != "running":
            return dict(body)
        time.sleep(POLL_SECONDS)


@click.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--name", help="Override the sweep's name.")
@click.option("--wait", is_flag=True, help="Wait for the sweep to end; exit 1 unless it succeeds.")
@url_option
@token_option
@json_option
def submit(
    sweep_file: str,
    name: str | None,
    wait: bool,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Submit a sweep (YAML or JSON): name, spec (the base job spec), parameters,
    objective, max_trials, max_parallel, sampler, pruner, seed."""
    request = load_spec(sweep_file)
    if not isinstance(request, dict):
        fail(f"{sweep_file} must hold a mapping (the sweep), not {type(request).__name__}")
    if name is not None:
        request["name"] = name
    client = make_client(url, token)
    made = call(client.post, "/api/v1/sweeps", request)
    if not wait:
        click.echo(json.dumps(made) if as_json else f"sweep {made['id']}: {made['status']}")
        return
    if not as_json:
        click.echo(f"sweep {made['id']}: {made['status']}")
    done = _wait(client, made["id"], as_json)
    if as_json:
        click.echo(json.dumps(done))
    if done["status"] != "succeeded":
        fail(
            f"sweep {done['id']} {done['status']}" + (f": {done['error']}" if done["error"] else "")
        )


@click.command("list")
@click.option("--status", type=click.Choice(SWEEP_STATUSES))
@click.option("--limit", default=20, show_default=True, type=int)
@url_option
@token_option
@json_option
def list_sweeps(
    status: str | None, limit: int, url: str | None, token: str | None, as_json: bool
) -> None:
    """List sweeps, newest first."""
    query = f"?limit={limit}" + (f"&status={status}" if status else "")
    page = call(make_client(url, token).get, f"/api/v1/sweeps{query}")
    if as_json:
        click.echo(json.dumps(page))
        return
    for item in page["sweeps"]:
        click.echo(_line(item))


@click.command()
@click.argument("sweep_id", type=int)
@url_option
@token_option
@json_option
def show(sweep_id: int, url: str | None, token: str | None, as_json: bool) -> None:
    """Show a sweep and a table of its trials."""
    body = call(make_client(url, token).get, f"/api/v1/sweeps/{sweep_id}")
    if as_json:
        click.echo(json.dumps(body))
        return
    objective = body["objective"]
    click.echo(
        f"sweep {body['id']} {body['name']!r}: {body['status']}"
        + (
            " (cancel requested)"
            if body["cancel_requested"] and body["status"] == "running"
            else ""
        )
    )
    click.echo(
        f"  {objective['direction']} {objective['metric']}, sampler {body['sampler']}, "
        f"pruner {body['pruner']['type']}, {body['epochs_trained']:.2f} epochs trained"
    )
    counts = ", ".join(f"{n} {status}" for status, n in body["counts"].items() if n)
    click.echo(f"  trials: {counts or 'none yet'} (of {body['max_trials']})")
    best = body["best_trial"]
    if best:
        click.echo(
            f"  best: trial {best['number']} ({_value(best['value'])}) {_params(best['params'])}"
        )
    if body["error"]:
        click.echo(f"  error: {body['error']}")
    click.echo(f"{'trial':>5}  {'job':>6}  {'status':<10} {'value':>8}  {'epochs':>11}  params")
    for t in body["trials"]:
        epochs = f"{t['epochs_trained']:.2f}/{t['epochs']}"
        click.echo(
            f"{t['number']:>5}  {_value(t['job_id']):>6}  {t['status']:<10} "
            f"{_value(t['value']):>8}  {epochs:>11}  {_params(t['params'])}"
        )


@click.command()
@click.argument("sweep_id", type=int)
@url_option
@token_option
@json_option
def cancel(sweep_id: int, url: str | None, token: str | None, as_json: bool) -> None:
    """Cancel a running sweep: no new trials; its unfinished trials are cancelled."""
    body = call(make_client(url, token).post, f"/api/v1/sweeps/{sweep_id}/cancel")
    if as_json:
        click.echo(json.dumps(body))
        return
    stopping = sum(1 for t in body["trials"] if t["status"] == "running")
    click.echo(
        f"sweep {sweep_id}: cancel requested"
        + (
            f" ({stopping} running trial{'s' if stopping != 1 else ''} stopping)"
            if stopping
            else ""
        )
    )


for group in (sweeps, sweep):
    for command in (submit, list_sweeps, show, cancel):
        group.add_command(command)
