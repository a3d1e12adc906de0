"""`seqtrain models`: upload, list, show, share and delete pretrained base models.

`models upload DIR` archives the directory's model files (the ones the server keeps:
config.json, *.safetensors, the tokenizer's files, ...) into a temporary .tar.gz, following
links (a Hugging Face cache's snapshot folders are links); an archive is sent as it is.
The file is streamed from disk, never read whole into memory.
"""

from __future__ import annotations

import json
import secrets
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from cli.client import Client
from cli.common import call, fail, json_option, make_client, token_option, url_option
from shared.hub.archive import is_kept

UPLOAD_TIMEOUT = 3600.0  # the server inspects and hashes the archive before it answers
CHUNK = 1 << 20


@click.group()
def models() -> None:
    """Upload and inspect pretrained base models."""


def _model_line(m: dict[str, Any]) -> str:
    return (
        f"{m['id']:>6}  {m['model_type']:<12} {m['parameters']:>13,} params  "
        f"{m['name']}  ({m['reference']}{', shared' if m['shared'] else ''})"
    )


def archive_directory(directory: Path, target: Path) -> list[str]:
    """Write the directory's model files into `target` (.tar.gz); the names archived. The
    rest (READMEs, subfolders, pickle-based copies of the weights) is left out, and said so."""
    entries = sorted(directory.iterdir())
    names = [p.name for p in entries if p.is_file() and is_kept(p.name)]
    if not names:
        fail(f"{directory} holds no model files (config.json, *.safetensors, tokenizer files)")
    skipped = [p.name + ("/" if p.is_dir() else "") for p in entries if p.name not in names]
    if skipped:
        click.echo(f"not uploaded (a model does not need them): {', '.join(skipped)}", err=True)
    with tarfile.open(target, "w:gz", dereference=True) as archive:
        for name in names:
            archive.add(directory / name, arcname=name, recursive=False)
    return names


def _framing(filename: str, fields: dict[str, str], boundary: str) -> tuple[bytes, bytes]:
    """The multipart body before and after the file's bytes."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe_name}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    return "".join(parts).encode(), f"\r\n--{boundary}--\r\n".encode()


def _body(path: Path, head: bytes, tail: bytes) -> Iterator[bytes]:
    yield head
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
    yield tail


def stream_upload(client: Client, path: Path, filename: str, fields: dict[str, str]) -> Any:
    """POST the file at `path` as multipart/form-data, streamed from disk."""
    boundary = "seqtrain" + secrets.token_hex(16)
    head, tail = _framing(filename, fields, boundary)
    req = urllib.request.Request(  # noqa: S310 (the client checked the scheme)
        client.base_url + "/api/v1/models", data=_body(path, head, tail), method="POST"
    )
    req.add_header("Content-Length", str(len(head) + path.stat().st_size + len(tail)))
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    return client.send(req, timeout=UPLOAD_TIMEOUT)


@models.command("upload")
@click.argument("source", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--name", help="Name to refer to it by (default: the directory or file name).")
@url_option
@token_option
@json_option
def models_upload(
    source: str, name: str | None, url: str | None, token: str | None, as_json: bool
) -> None:
    """Upload SOURCE: a Hugging Face model directory, or one as a .zip or .tar.gz."""
    client = make_client(url, token)
    path = Path(source)
    fields = {"name": name} if name else {}
    if path.is_dir():
        with tempfile.TemporaryDirectory(prefix="seqtrain-model-") as tmp:
            archived = Path(tmp) / f"{path.resolve().name}.tar.gz"
            archive_directory(path, archived)
            model = call(stream_upload, client, archived, archived.name, fields)
    else:
        model = call(stream_upload, client, path, path.name, fields)
    if as_json:
        click.echo(json.dumps(model))
        return
    click.echo(_model_line(model))


@models.command("list")
@url_option
@token_option
@json_option
def models_list(url: str | None, token: str | None, as_json: bool) -> None:
    """List your models and the shared ones."""
    page = call(make_client(url, token).get, "/api/v1/models")
    if as_json:
        click.echo(json.dumps(page))
        return
    for model in page["models"]:
        click.echo(_model_line(model))


@models.command("show")
@click.argument("model_id", type=int)
@url_option
@token_option
@json_option
def models_show(model_id: int, url: str | None, token: str | None, as_json: bool) -> None:
    """Show a model: architecture, parameters, files (JSON; one line with --json)."""
    model = call(make_client(url, token).get, f"/api/v1/models/{model_id}")
    click.echo(json.dumps(model) if as_json else json.dumps(model, indent=2))


@models.command("delete")
@click.argument("model_id", type=int)
@click.option(
    "--force",
    is_flag=True,
    help="Also when finished jobs were fine-tuned from it (their predictions then stop).",
)
@url_option
@token_option
@json_option
def models_delete(
    model_id: int, force: bool, url: str | None, token: str | None, as_json: bool
) -> None:
    """Delete a model (refused while a queued or running job uses it, and, without
    --force, while finished jobs' checkpoints need it)."""
    suffix = "?force=true" if force else ""
    call(make_client(url, token).delete, f"/api/v1/models/{model_id}{suffix}")
    click.echo(
        json.dumps({"id": model_id, "deleted": True}) if as_json else f"model {model_id} deleted"
    )


@models.command("share")
@click.argument("model_id", type=int)
@click.option("--off", is_flag=True, help="Stop sharing it.")
@url_option
@token_option
@json_option
def models_share(
    model_id: int, off: bool, url: str | None, token: str | None, as_json: bool
) -> None:
    """Share a model with every user, or stop (--off); admins only."""
    client = make_client(url, token)
    model = call(client.request, "PATCH", f"/api/v1/models/{model_id}", {"shared": not off})
    if as_json:
        click.echo(json.dumps(model))
        return
    click.echo(_model_line(model))
