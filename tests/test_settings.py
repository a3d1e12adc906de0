"""shared.settings: every setting declared once, README.md's table generated from the
declarations and current, the environment parsed with a clear message for a bad value."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import Settings, markdown_table
from tests.conftest import ROOT

FIELDS = dataclasses.fields(Settings)
# An environment read of a setting: os.environ["X"], os.environ.get("X"), os.getenv("X").
ENV_READ = re.compile(r"""(?:environ(?:\.get)?\s*[\[(]|getenv\s*\()\s*["'](SEQTRAIN_\w+)""")


def _readme_table() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Configuration\n\n") + len("## Configuration\n\n")
    return readme[start : readme.index("\n\n", start) + 1]


def test_the_readme_table_is_the_generated_one():
    assert _readme_table() == markdown_table(), (
        "README.md's configuration table is out of date: "
        "replace it with the output of `python -m shared.settings --markdown`"
    )


def test_the_markdown_command_prints_the_table():
    printed = subprocess.run(
        [sys.executable, "-m", "shared.settings", "--markdown"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == markdown_table()


def test_every_field_declares_a_unique_variable_and_a_description():
    names = [spec.metadata.get("env") for spec in FIELDS]
    assert all(names) and len(set(names)) == len(names)
    assert all(spec.metadata["help"] for spec in FIELDS)


@pytest.mark.parametrize(
    "spec", [s for s in FIELDS if s.metadata["shown"] is None], ids=lambda s: s.name
)
def test_a_default_shown_as_a_value_parses_back_to_the_default(spec):
    row = next(
        line for line in markdown_table().splitlines() if f"`{spec.metadata['env']}`" in line
    )
    shown = row.split(" | ")[1].strip("`")
    assert spec.metadata["parse"](shown) == spec.default


def test_no_setting_is_read_from_the_environment_outside_settings():
    readers = {}
    for package in ("api", "worker", "shared", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            if path != ROOT / "shared" / "settings.py":
                found = ENV_READ.findall(path.read_text())
                if found:
                    readers[str(path.relative_to(ROOT))] = found
    assert readers == {}


def test_unset_and_empty_variables_leave_the_defaults():
    from_env = Settings.from_env({"SEQTRAIN_LEASE_SECONDS": "", "SEQTRAIN_WORKER_NAME": "w"})
    assert dataclasses.replace(Settings(), worker_name="w") == from_env


def test_var_dir_moves_the_database_and_the_artifacts():
    settings = Settings.from_env({"SEQTRAIN_VAR_DIR": "/srv/seqtrain"})
    assert settings.var_dir == Path("/srv/seqtrain")
    assert settings.database_url == "sqlite:////srv/seqtrain/seqtrain.db"
    assert settings.artifact_root == "/srv/seqtrain/artifacts"
    explicit = Settings.from_env(
        {
            "SEQTRAIN_VAR_DIR": "/srv/x",
            "DATABASE_URL": "postgresql+psycopg://h/db",
            "ARTIFACT_ROOT": "/a",
        }
    )
    assert explicit.database_url == "postgresql+psycopg://h/db"
    assert explicit.artifact_root == "/a"


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("true", True), ("YES", True), ("on", True)]
    + [("0", False), ("false", False), ("No", False), ("off", False)],
)
def test_flags(raw, value):
    settings = Settings.from_env({"SEQTRAIN_SECURE_COOKIES": raw, "SEQTRAIN_FORKSERVER": raw})
    assert settings.secure_cookies is value and settings.forkserver is value


def test_numbers():
    settings = Settings.from_env(
        {
            "SEQTRAIN_AUTH_FAILURE_LIMIT": "7",
            "SEQTRAIN_LEASE_SECONDS": "2.5",
            "SEQTRAIN_VISIBILITY_TIMEOUT": "30",
            "SEQTRAIN_TORCH_THREADS": "3",
            "SEQTRAIN_SUBMIT_BATCH": "0",  # at least one
            "SEQTRAIN_AUTH_CACHE_SECONDS": "-4",  # never negative: 0 turns the cache off
        }
    )
    assert settings.auth_failure_limit == 7 and settings.lease_seconds == 2.5
    assert settings.visibility_timeout_seconds == 30 and settings.torch_threads == 3
    assert settings.submit_batch == 1 and settings.auth_cache_seconds == 0.0
    assert Settings().torch_threads is None


def test_words_are_case_blind_and_checked():
    settings = Settings.from_env(
        {"SEQTRAIN_LOG_FORMAT": "JSON", "SEQTRAIN_WORKER_DEVICE_KIND": "cpu"}
    )
    assert settings.log_format == "json" and settings.worker_device_kind == "cpu"


def test_the_artifact_root_is_a_directory_or_an_s3_bucket():
    assert Settings().artifact_root == "var/artifacts"
    for raw in ("var/x", "/srv/artifacts", "s3://bucket", "s3://bucket/some/prefix"):
        assert Settings.from_env({"ARTIFACT_ROOT": raw}).artifact_root == raw
    assert Settings.from_env({"ARTIFACT_ROOT": " s3://b/p "}).artifact_root == "s3://b/p"
    remote = Settings.from_env(
        {
            "ARTIFACT_ROOT": "s3://seqtrain/artifacts",
            "SEQTRAIN_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
            "SEQTRAIN_STORE_RETRY_SECONDS": "7.5",
            "SEQTRAIN_CACHE_BYTES": "1000",
        }
    )
    assert remote.s3_endpoint_url == "http://127.0.0.1:8333"
    assert remote.store_retry_seconds == 7.5 and remote.cache_bytes == 1000


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("ARTIFACT_ROOT", "s3://", "a directory or s3://bucket/prefix"),
        ("ARTIFACT_ROOT", "s3:///prefix", "a directory or s3://bucket/prefix"),
        ("SEQTRAIN_AUTH_FAILURE_LIMIT", "2.5", "an integer"),
        ("SEQTRAIN_TORCH_THREADS", "many", "an integer"),
        ("SEQTRAIN_LEASE_SECONDS", "1m", "a number"),
        ("SEQTRAIN_AUTH_CACHE_SECONDS", "soon", "a number"),
        ("SEQTRAIN_SECURE_COOKIES", "maybe", "1 or 0"),
        ("SEQTRAIN_LOG_FORMAT", "xml", "one of text, json"),
        ("SEQTRAIN_WORKER_DEVICE_KIND", "tpu", "one of auto, cpu"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_must_be(name, raw, expected):
    with pytest.raises(ValueError) as caught:
        Settings.from_env({name: raw})
    assert str(caught.value).startswith(f"environment variable {name} must be {expected}")
    assert str(caught.value).endswith(f"got {raw!r}")


def test_a_bad_value_in_the_process_environment(monkeypatch):
    monkeypatch.setenv("SEQTRAIN_HEARTBEAT_SECONDS", "fast")
    with pytest.raises(ValueError, match="SEQTRAIN_HEARTBEAT_SECONDS must be a number"):
        Settings.from_env()
