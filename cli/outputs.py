"""Predictions from a job's best checkpoint: a few texts answered at once, or a whole dataset
predicted on a worker through the queue and downloaded:

    seqtrain predict 7 "a gripping , beautiful film" "dull and lifeless"
    seqtrain predict 7 --dataset dataset:3 --format csv --output predictions.csv

A batch prediction shows its progress; Ctrl-C cancels it; a failure exits non-zero with
the output's error."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from cli import jobs
from cli.client import Client
from cli.common import call, fail, json_option, make_client, token_option, url_option

POLL_SECONDS = 0.5


@click.command()
@click.argument("job_id", type=int)
@click.argument("texts", nargs=-1)
@click.option("--dataset", help="Predict over every row of this dataset (dataset:<id> or a name).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option("--output", type=click.Path(dir_okay=False), help="Where to write the file.")
@click.option("--length", type=int, help="language modelling: tokens per row.")
@click.option("--temperature", type=float, help="language modelling: sampling temperature.")
@click.option("--seed", type=int, help="language modelling: row i samples with seed + i.")
@url_option
@token_option
@json_option
@click.pass_context
def predict(
    ctx: click.Context,
    job_id: int,
    texts: tuple[str, ...],
    dataset: str | None,
    fmt: str,
    output: str | None,
    length: int | None,
    temperature: float | None,
    seed: int | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Classify TEXTS (or tag them) with a job's best checkpoint, or, with --dataset and
    --output, predict over a whole dataset on a worker and download the file."""
    if dataset is None:
        if not texts:
            fail("give TEXTS to predict, or --dataset D --output FILE")
        ctx.invoke(jobs.predict, job_id=job_id, texts=texts, url=url, token=token, as_json=as_json)
        return
    if texts or output is None:
        fail("--dataset takes --output FILE and no TEXTS")
    body: dict[str, Any] = {"dataset": dataset, "format": fmt}
    extra = {"length": length, "temperature": temperature, "seed": seed}
    body.update({k: v for k, v in extra.items() if v is not None})
    client = make_client(url, token)
    made = call(client.post, f"/api/v1/jobs/{job_id}/predictions", body)
    done = wait(client, made, quiet=as_json)
    if done["status"] != "succeeded":
        fail(f"output {done['id']} {done['status']}: {done.get('error') or 'no result'}")
    size = download(client, done, Path(output))
    if as_json:
        click.echo(json.dumps({**done, "path": output}))
    else:
        click.echo(f"wrote {output} ({size:,} bytes, {done['rows_done']:,} rows)")


def wait(client: Client, output: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Poll the output until it ends, showing its progress; Ctrl-C cancels it."""
    self_link, shown = output["links"]["self"], ""
    try:
        while output["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(POLL_SECONDS)
            output = call(client.get, self_link)
            line = progress_line(output)
            if not quiet and line != shown and sys.stderr.isatty():
                click.echo("\r" + line, nl=False, err=True)
            shown = line
    except KeyboardInterrupt:
        call(client.post, output["links"]["cancel"])
        fail(f"output {output['id']} cancelled", 130)
    if not quiet and sys.stderr.isatty():
        click.echo("", err=True)
    return output


def progress_line(output: dict[str, Any]) -> str:
    total = output.get("rows_total")
    rows = f"{output['rows_done']:,}/{total:,} rows" if total else f"{output['rows_done']:,} rows"
    return f"output {output['id']}: {output['status']}, {rows}"


def download(client: Client, output: dict[str, Any], dest: Path) -> int:
    """Stream the output's file to `dest` (through a temporary file beside it), checking
    its sha256; the size."""
    req = urllib.request.Request(client.base_url + output["links"]["download"])  # noqa: S310
    if client.token:  # not sent on to a presigned URL the API redirects to
        req.add_unredirected_header("Authorization", f"Bearer {client.token}")
    partial = dest.with_name(dest.name + ".part")
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(req, timeout=client.timeout) as resp, partial.open("wb") as out:  # noqa: S310 (scheme checked by Client)
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        fail(f"download of output {output['id']} failed: {exc}")
    if output.get("sha256") and digest.hexdigest() != output["sha256"]:
        partial.unlink(missing_ok=True)
        fail(f"output {output['id']}'s file arrived corrupted (sha256 mismatch)")
    os.replace(partial, dest)
    return size
