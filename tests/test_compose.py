"""docker-compose.yml: every service, its healthcheck and start order, the GPU reservation,
the shared artifact volume; and `docker-compose config` (v1.29, offline) accepts the file.

The structural tests read the file with PyYAML (anchors and merge keys resolved). The
`config` tests need the `docker-compose` binary (scripts/ensure-docker-compose installs it);
without it they skip, or fail under SEQTRAIN_REQUIRE_COMPOSE=1 (scripts/test sets it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
SEQTRAIN_SERVICES = ("migrate", "api", "worker", "worker-cpu", "reconciler")
LONG_RUNNING = ("api", "worker", "worker-cpu", "reconciler")
ARTIFACTS = "/var/lib/seqtrain/artifacts"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else list(command)


def test_every_service_is_there_and_no_version_key(compose, services):
    assert set(services) == {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker",
        "worker-cpu",
        "reconciler",
        "flower",
    }
    # Without `version:` both docker-compose 1.29 and `docker compose` v2 read the Compose
    # Specification (profiles, device reservations, service_completed_successfully).
    assert "version" not in compose


def test_postgres_and_redis_keep_data_and_report_health(compose, services):
    postgres, redis = services["postgres"], services["redis"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    command = command_of(redis)
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    for volume in ("pgdata", "redisdata", "artifacts"):
        assert volume in compose["volumes"]


def test_migrate_runs_once_before_everything_of_ours(services):
    migrate = services["migrate"]
    assert command_of(migrate) == ["seqtrain", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in LONG_RUNNING:
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name
        assert services[name]["restart"] == "unless-stopped", name


def test_api_is_gunicorn_with_a_healthcheck(services):
    api = services["api"]
    assert command_of(api)[:2] == ["seqtrain", "api"]  # gunicorn, gevent (cli/services.py)
    assert "0.0.0.0" in command_of(api)
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert api["depends_on"]["postgres"] == {"condition": "service_healthy"}
    # Published on the loopback unless .env says otherwise.
    assert api["ports"] == ["${SEQTRAIN_API_BIND:-127.0.0.1}:${SEQTRAIN_API_PORT:-8000}:8000"]


def test_worker_reserves_a_gpu_and_scales(services):
    worker = services["worker"]
    assert command_of(worker)[:2] == ["seqtrain", "worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # `--scale worker=N` needs no fixed name and no fixed host port.
    for name in ("worker", "worker-cpu", "reconciler"):
        assert "container_name" not in services[name], name
        assert "ports" not in services[name], name
    assert worker["environment"]["SEQTRAIN_WORKER_RECONCILER"] == "${SEQTRAIN_WORKER_RECONCILER:-1}"
    assert worker["image"] == "seqtrain:${SEQTRAIN_TORCH_VARIANT:-cuda}"


def test_cpu_worker_and_flower_are_profiles(services):
    cpu = services["worker-cpu"]
    assert cpu["profiles"] == ["cpu"]
    assert cpu["build"]["args"]["TORCH_VARIANT"] == "cpu" and cpu["image"] == "seqtrain:cpu"
    assert "deploy" not in cpu
    assert command_of(cpu)[:2] == ["seqtrain", "worker"]
    flower = services["flower"]
    assert flower["profiles"] == ["flower"]
    assert "--broker=redis://redis:6379/0" in command_of(flower)
    assert flower["ports"][0].startswith("127.0.0.1:")
    for name, service in services.items():
        if name not in ("worker-cpu", "flower"):
            assert "profiles" not in service, name


def test_reconciler_service_runs_seqtrain_reconcile(services):
    assert command_of(services["reconciler"]) == ["seqtrain", "reconcile"]


def test_api_and_workers_share_one_artifact_volume(services):
    for name in SEQTRAIN_SERVICES:
        service = services[name]
        assert f"artifacts:{ARTIFACTS}" in service["volumes"], name
        env = service["environment"]
        assert env["ARTIFACT_ROOT"] == ARTIFACTS, name
        assert (
            env["DATABASE_URL"].startswith("postgresql+psycopg://")
            and "@postgres:" in env["DATABASE_URL"]
        ), name
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
        assert env["SEQTRAIN_SECRET_KEY"].startswith("${SEQTRAIN_SECRET_KEY:?"), name


def test_every_seqtrain_command_exists_in_the_cli(services):
    from cli.main import main

    for name in SEQTRAIN_SERVICES:
        command = command_of(services[name])
        assert command[1] in main.commands, f"{name}: seqtrain {command[1]}"


def test_env_example_names_every_variable_the_file_reads():
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    example = (ROOT / ".env.example").read_text()
    assigned = set(re.findall(r"^(\w+)=", example, re.M))
    assert used <= assigned, sorted(used - assigned)
    assert "SEQTRAIN_SECRET_KEY" in assigned


def test_dockerfile_builds_a_cpu_or_cuda_torch():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_VARIANT=cuda" in dockerfile
    assert "download.pytorch.org/whl/cpu" in dockerfile
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()


# ---------------------------------------------------------------- docker-compose config


def compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        reason = "docker-compose is not installed (scripts/ensure-docker-compose installs it)"
        if os.environ.get("SEQTRAIN_REQUIRE_COMPOSE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def run_config(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEQTRAIN_", "POSTGRES_"))}
    return subprocess.run(
        [compose_binary(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def filled_env_file(tmp_path: Path) -> Path:
    """.env.example with the one required value filled in."""
    text = (ROOT / ".env.example").read_text()
    path = tmp_path / ".env"
    path.write_text(text.replace("SEQTRAIN_SECRET_KEY=\n", "SEQTRAIN_SECRET_KEY=not-a-secret\n"))
    return path


def test_docker_compose_config_accepts_the_file(tmp_path):
    result = run_config(
        filled_env_file(tmp_path), "--profile", "cpu", "--profile", "flower", "config"
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert set(resolved) >= {"postgres", "redis", "migrate", "api", "worker", "worker-cpu"}
    # docker-compose kept (and so understood) the newer keys rather than dropping them.
    worker = resolved["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert resolved["worker-cpu"]["profiles"] == ["cpu"]
    assert worker["environment"]["SEQTRAIN_SECRET_KEY"] == "not-a-secret"
    port = resolved["api"]["ports"][0]  # "127.0.0.1:8000:8000" (v1) or a mapping (v2)
    assert (
        port.startswith("127.0.0.1:8000:")
        if isinstance(port, str)
        else port["host_ip"] == "127.0.0.1"
    )


def test_docker_compose_config_lists_every_service(tmp_path):
    result = run_config(filled_env_file(tmp_path), "config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker",
        "worker-cpu",
        "reconciler",
        "flower",
    }


def test_docker_compose_config_requires_the_secret_key(tmp_path):
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    result = run_config(env_file, "config")
    assert result.returncode != 0 and "set SEQTRAIN_SECRET_KEY in .env" in result.stderr
