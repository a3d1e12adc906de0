"""`seqtrain datasets`: upload, list, show and delete datasets through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cli.common import call, json_option, make_client, token_option, url_option


@click.group()
def datasets() -> None:
    """Upload and inspect datasets."""


def _dataset_line(d: dict[str, Any]) -> str:
    return f"{d['id']:>6}  {d['format']:<6} {d['rows']:>9,} rows  {d['name']}  ({d['reference']})"


@datasets.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format", "fmt", required=True, type=click.Choice(["tsv", "csv", "jsonl", "text", "conll"])
)
@click.option("--name", help="Name to refer to it by (default: the file name).")
@click.option("--text-column", help="tsv/csv: text column header; jsonl: text field.")
@click.option("--label-column", help="tsv/csv: label column header; jsonl: label field.")
@click.option(
    "--source-column",
    help="seq2seq pairs (with --target-column, instead of --text-column): tsv/csv: source "
    "column header; jsonl: source field.",
)
@click.option(
    "--target-column", help="seq2seq pairs: tsv/csv: target column header; jsonl: target field."
)
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--token-column", type=int, help="conll: token column index (default 0).")
@click.option("--tag-column", type=int, help="conll: tag column index (default -1, the last).")
@click.option(
    "--scheme", type=click.Choice(["auto", "IOB1", "IOB2", "BIOES"]), help="conll tag scheme."
)
@url_option
@token_option
@json_option
def datasets_upload(
    file: str,
    fmt: str,
    name: str | None,
    text_column: str | None,
    label_column: str | None,
    source_column: str | None,
    target_column: str | None,
    encoding: str,
    token_column: int | None,
    tag_column: int | None,
    scheme: str | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Upload FILE; prints the dataset with its statistics."""
    options = {
        "format": fmt,
        "name": name,
        "text_column": text_column,
        "label_column": label_column,
        "source_column": source_column,
        "target_column": target_column,
        "encoding": encoding,
        "token_column": token_column,
        "tag_column": tag_column,
        "scheme": scheme,
    }
    fields = {k: str(v) for k, v in options.items() if v is not None}
    content = Path(file).read_bytes()
    dataset = call(
        make_client(url, token).upload, "/api/v1/datasets", Path(file).name, content, fields
    )
    if as_json:
        click.echo(json.dumps(dataset))
        return
    click.echo(_dataset_line(dataset))
    click.echo(json.dumps(dataset["stats"], indent=2))


@datasets.command("list")
@url_option
@token_option
@json_option
def datasets_list(url: str | None, token: str | None, as_json: bool) -> None:
    """List your datasets."""
    page = call(make_client(url, token).get, "/api/v1/datasets")
    if as_json:
        click.echo(json.dumps(page))
        return
    for dataset in page["datasets"]:
        click.echo(_dataset_line(dataset))


@datasets.command("show")
@click.argument("dataset_id", type=int)
@url_option
@token_option
@json_option
def datasets_show(dataset_id: int, url: str | None, token: str | None, as_json: bool) -> None:
    """Show a dataset and its statistics (JSON; one line with --json)."""
    dataset = call(make_client(url, token).get, f"/api/v1/datasets/{dataset_id}")
    click.echo(json.dumps(dataset) if as_json else json.dumps(dataset, indent=2))


@datasets.command("delete")
@click.argument("dataset_id", type=int)
@url_option
@token_option
@json_option
def datasets_delete(dataset_id: int, url: str | None, token: str | None, as_json: bool) -> None:
    """Delete a dataset (refused while a queued or running job uses it)."""
    call(make_client(url, token).delete, f"/api/v1/datasets/{dataset_id}")
    click.echo(
        json.dumps({"id": dataset_id, "deleted": True})
        if as_json
        else f"dataset {dataset_id} deleted"
    )
