"""Export a job's best checkpoint as a bundle, made on a worker and downloaded:

    seqtrain export 7 --output job-7.zip            # weights, tokenizer, ONNX, model card
    seqtrain export 7 --output job-7.zip --no-onnx

Shows its progress; Ctrl-C cancels it; a failure exits non-zero with the output's error."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.common import call, fail, json_option, make_client, token_option, url_option
from cli.outputs import download, wait


@click.command("export")
@click.argument("job_id", type=int)
@click.option(
    "--output", type=click.Path(dir_okay=False), required=True, help="Where to write the zip."
)
@click.option("--onnx/--no-onnx", default=True, show_default=True, help="Add model.onnx.")
@url_option
@token_option
@json_option
def export(
    job_id: int, output: str, onnx: bool, url: str | None, token: str | None, as_json: bool
) -> None:
    """Export JOB_ID's best checkpoint: model.safetensors, tokenizer.json, labels.json,
    spec.json, model.onnx (checked against PyTorch) and a README.md model card, in a zip."""
    client = make_client(url, token)
    made = call(client.post, f"/api/v1/jobs/{job_id}/exports", {"onnx": onnx})
    done = wait(client, made, quiet=as_json)
    if done["status"] != "succeeded":
        fail(f"output {done['id']} {done['status']}: {done.get('error') or 'no result'}")
    size = download(client, done, Path(output))
    if as_json:
        click.echo(json.dumps({**done, "path": output}))
        return
    click.echo(f"wrote {output} ({size:,} bytes)")
    onnx_info = done["summary"].get("onnx") or {}
    if onnx_info.get("exported"):
        worst = onnx_info["parity"]["max_abs_diff"]
        click.echo(f"model.onnx: max |ONNX - PyTorch| = {worst:.3g}")
    elif onnx:
        click.echo(f"no model.onnx: {onnx_info.get('reason')}")
