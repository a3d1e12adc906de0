"""Jobs through the API: submit, retry, list (`seqtrain jobs`), show, cancel, logs, and
predictions (predict, generate, translate) from a job's best checkpoint."""

from __future__ import annotations

import json
import time

import click

from cli.common import call, fail, json_option, load_spec, make_client, token_option, url_option
from cli.watch import follow_option, wait_option, watch
from shared.protocol import TERMINAL_STATUSES, JobStatus


@click.command()
@click.argument("spec_file", type=click.Path(dir_okay=False))
@click.option("--name", help="Override the spec's name.")
@click.option("--queue", help="Override the spec's resources.queue.")
@click.option(
    "--priority", help="Override the spec's resources.priority: 0-100, low, normal or high."
)
@wait_option
@follow_option
@url_option
@token_option
@json_option
def submit(
    spec_file: str,
    name: str | None,
    queue: str | None,
    priority: str | None,
    wait: bool,
    follow_: bool,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Submit a job spec (YAML or JSON)."""
    spec = load_spec(spec_file)
    if not isinstance(spec, dict):
        fail(f"{spec_file} must hold a mapping (the job spec), not {type(spec).__name__}")
    if name is not None:
        spec["name"] = name
    if queue is not None:
        spec.setdefault("resources", {})["queue"] = queue
    if priority is not None:  # the API validates it (a 422 names resources.priority)
        spec.setdefault("resources", {})["priority"] = (
            int(priority) if priority.isdigit() else priority
        )
    client = make_client(url, token)
    watch(client, call(client.post, "/api/v1/jobs", spec), wait, follow_, as_json)


@click.command()
@click.argument("job_id", type=int)
@wait_option
@follow_option
@url_option
@token_option
@json_option
def retry(
    job_id: int, wait: bool, follow_: bool, url: str | None, token: str | None, as_json: bool
) -> None:
    """Run a finished job again: a new job with the same spec and dataset versions."""
    client = make_client(url, token)
    watch(client, call(client.post, f"/api/v1/jobs/{job_id}/retry"), wait, follow_, as_json)


@click.command()
@click.argument("job_id", type=int)
@click.option("--attempt", type=int, help="Attempt whose log to print (default: the latest).")
@click.option("--follow", "-f", "follow_", is_flag=True, help="Keep printing until the job ends.")
@click.option("--poll", default=0.5, show_default=True, type=float, help="Seconds between reads.")
@url_option
@token_option
@json_option
def logs(
    job_id: int,
    attempt: int | None,
    follow_: bool,
    poll: float,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Print a job's trainer output (stdout and stderr). With -f, follow it across attempts
    until the job ends. --json prints the API's chunks, one JSON object a line."""
    client = make_client(url, token)
    pinned, offset = attempt, 0
    while True:
        query = f"?offset={offset}" + (f"&attempt={pinned}" if pinned else "")
        chunk = call(client.get, f"/api/v1/jobs/{job_id}/logs{query}")
        if as_json:
            click.echo(json.dumps(chunk))
        elif chunk["text"]:
            click.echo(chunk["text"], nl=False)
        if pinned is None and chunk["attempt"] > 0:
            pinned = chunk["attempt"]  # stay on this attempt until it ends
        if chunk["text"] and chunk["next_offset"] > offset:
            offset = chunk["next_offset"]
            continue  # more may be waiting: read on before sleeping
        if not follow_:
            return
        if chunk["complete"]:
            if attempt is not None:
                return  # the attempt asked for has ended
            job = call(client.get, f"/api/v1/jobs/{job_id}")
            if job["status"] in TERMINAL_STATUSES:
                return
            if job["attempt"] > chunk["attempt"]:  # requeued: follow the next attempt
                pinned, offset = chunk["attempt"] + 1, 0
                if not as_json:
                    click.echo(f"--- attempt {pinned} ---", err=True)
                continue
        time.sleep(poll)


@click.command("jobs")
@click.option("--status", type=click.Choice([status.value for status in JobStatus]))
@click.option("--limit", default=20, show_default=True, type=int)
@url_option
@token_option
@json_option
def list_jobs(
    status: str | None, limit: int, url: str | None, token: str | None, as_json: bool
) -> None:
    """List jobs, newest first."""
    query = f"?limit={limit}" + (f"&status={status}" if status else "")
    page = call(make_client(url, token).get, f"/api/v1/jobs{query}")
    if as_json:
        click.echo(json.dumps(page))
        return
    for job in page["jobs"]:
        click.echo(
            f"{job['id']:>6}  {job['status']:<10} {job['model_type']:<12} "
            f"epoch {job['epoch']:<4} {job['name']}"
        )


@click.command()
@click.argument("job_id", type=int)
@url_option
@token_option
@json_option
def show(job_id: int, url: str | None, token: str | None, as_json: bool) -> None:
    """Show one job: status, attempt, latest metrics, error, events."""
    job = call(make_client(url, token).get, f"/api/v1/jobs/{job_id}")
    if as_json:
        click.echo(json.dumps(job))
        return
    click.echo(
        f"job {job['id']} {job['name']!r}: {job['status']} (attempt {job['attempt']}, "
        f"epoch {job['epoch']}, step {job['step']})"
    )
    for key, metric in sorted(job["latest_metrics"].items()):
        click.echo(f"  {key:<22} {metric['value']:.4f} (step {metric['step']})")
    for event in job["events"]:
        change = (
            f"{event['from_status'] or ''} -> {event['to_status']}"
            if event["to_status"]
            else "note"
        )
        click.echo(
            f"  {event['ts']}  {change:<22} {event['actor']}: {event['message'].splitlines()[0] if event['message'] else ''}"
        )
    if job["error"]:
        click.echo(f"error:\n{job['error']}")


@click.command()
@click.argument("job_id", type=int)
@url_option
@token_option
@json_option
def cancel(job_id: int, url: str | None, token: str | None, as_json: bool) -> None:
    """Cancel a queued or running job."""
    job = call(make_client(url, token).post, f"/api/v1/jobs/{job_id}/cancel")
    click.echo(
        json.dumps(job)
        if as_json
        else f"job {job_id}: {job['status']}"
        + (" (cancel requested)" if job["status"] == "running" else "")
    )


@click.command()
@click.argument("job_id", type=int)
@click.argument("texts", nargs=-1, required=True)
@url_option
@token_option
@json_option
def predict(
    job_id: int, texts: tuple[str, ...], url: str | None, token: str | None, as_json: bool
) -> None:
    """Classify TEXTS (or tag them) with a job's best checkpoint."""
    answer = call(
        make_client(url, token).post, f"/api/v1/jobs/{job_id}/predict", {"texts": list(texts)}
    )
    if as_json:
        click.echo(json.dumps(answer))
        return
    for text, item in zip(texts, answer["predictions"], strict=True):
        if item.get("label") is not None:
            click.echo(f"{item['label']:<12} {item['probabilities'][item['label']]:.3f}  {text}")
        else:
            click.echo(
                " ".join(f"{t}/{g}" for t, g in zip(item["tokens"], item["tags"], strict=True))
            )


@click.command()
@click.argument("job_id", type=int)
@click.option("--prompt", default="", help="Text to continue.")
@click.option("--length", default=200, show_default=True, type=int)
@click.option("--temperature", default=0.8, show_default=True, type=float)
@click.option("--top-k", type=int)
@click.option("--seed", type=int)
@url_option
@token_option
@json_option
def generate(
    job_id: int,
    prompt: str,
    length: int,
    temperature: float,
    top_k: int | None,
    seed: int | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Sample text from a language-modelling job's best checkpoint."""
    body = {
        "prompt": prompt,
        "length": length,
        "temperature": temperature,
        "top_k": top_k,
        "seed": seed,
    }
    answer = call(make_client(url, token).post, f"/api/v1/jobs/{job_id}/generate", body)
    click.echo(json.dumps(answer) if as_json else prompt + answer["text"])


@click.command()
@click.argument("job_id", type=int)
@click.argument("texts", nargs=-1, required=True)
@click.option(
    "--beam-size", type=click.IntRange(1, 16), help="Hypotheses kept (1: greedy); default: spec."
)
@click.option(
    "--length-penalty", type=click.FloatRange(0.0, 5.0), help="Length penalty; default: spec."
)
@click.option("--max-length", type=click.IntRange(1, 512), help="Most tokens a translation has.")
@url_option
@token_option
@json_option
def translate(
    job_id: int,
    texts: tuple[str, ...],
    beam_size: int | None,
    length_penalty: float | None,
    max_length: int | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Translate TEXTS with a seq2seq job's best checkpoint (unset decoding options: the
    job's spec.decoding)."""
    body = {
        "texts": list(texts),
        "beam_size": beam_size,
        "length_penalty": length_penalty,
        "max_length": max_length,
    }
    answer = call(make_client(url, token).post, f"/api/v1/jobs/{job_id}/translate", body)
    if as_json:
        click.echo(json.dumps(answer))
        return
    for item in answer["translations"]:
        click.echo(item["translation"])
