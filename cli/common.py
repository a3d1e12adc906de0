"""What every command shares: the --url/--token/--json options, the API client they make,
the settings and the database for the commands that read them, and the error exit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import yaml

from cli.client import ApiFailure, Client

if TYPE_CHECKING:
    from shared.settings import Settings

url_option = click.option(
    "--url",
    default=None,
    show_default="SEQTRAIN_URL, else http://127.0.0.1:8000",
    help="API base URL (env SEQTRAIN_URL).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
token_option = click.option(
    "--token",
    default=None,
    help="API token (env SEQTRAIN_TOKEN; default: the token `seqtrain up` wrote to var/dev-token).",
)


def settings() -> Settings:
    """The service's settings (shared/settings.py), a malformed variable an error exit."""
    from shared.settings import Settings

    try:
        return Settings.from_env()
    except ValueError as exc:
        fail(str(exc))


def var_dir() -> Path:
    return settings().var_dir


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def make_client(url: str | None, token: str | None) -> Client:
    """A client of `url` (else SEQTRAIN_URL) with `token` (else SEQTRAIN_TOKEN, else the token
    `seqtrain up` wrote)."""
    configured = settings()
    url = url or configured.api_url
    token = token or configured.api_token or None
    if token is None:
        dev_token = configured.var_dir / "dev-token"
        token = dev_token.read_text().strip() if dev_token.is_file() else None
    if not token:
        fail("no API token: pass --token, set SEQTRAIN_TOKEN, or run `seqtrain tokens create NAME`")
    try:
        return Client(url, token)
    except ValueError as exc:
        fail(str(exc))


def call(fn: Any, *args: Any) -> Any:
    """fn(*args), with an API error or an unreachable API as the command's error exit."""
    try:
        return fn(*args)
    except ApiFailure as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot reach the API: {exc}")


def database() -> Any:
    from shared.infra.db import Database

    return Database(settings().database_url)


def load_spec(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        fail(f"{path} is not valid YAML/JSON: {exc}")
