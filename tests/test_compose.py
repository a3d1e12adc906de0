"""docker-compose.yml: every service, its healthcheck and start order, the GPU reservation,
the object store (SeaweedFS and its one-shot bucket) that replaces a shared artifact volume;
and `docker-compose config` (v1.29, offline) accepts the file.

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
EVERY_SERVICE = {
    "postgres",
    "redis",
    "seaweedfs",
    "create-bucket",
    "migrate",
    "api",
    "worker",
    "worker-cpu",
    "reconciler",
    "flower",
}
BUCKET = "seqtrain"
COMPLETED = {"condition": "service_completed_successfully"}


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
    assert set(services) == EVERY_SERVICE
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
    assert set(compose["volumes"]) == {"pgdata", "redisdata", "seaweeddata"}


def test_migrate_runs_once_before_everything_of_ours(services):
    migrate = services["migrate"]
    assert command_of(migrate) == ["seqtrain", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "create-bucket": COMPLETED,
    }
    for name in LONG_RUNNING:
        depends = services[name]["depends_on"]
        assert depends["migrate"] == COMPLETED, name
        assert depends["create-bucket"] == COMPLETED, name
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


def test_seaweedfs_serves_s3_with_a_healthcheck_and_keeps_its_data(services):
    store = services["seaweedfs"]
    assert store["image"].startswith("chrislusf/seaweedfs:")
    script = " ".join(command_of(store))
    assert "weed server" in script and " -s3 " in script and "-dir=/data" in script
    assert "-s3.config=/tmp/s3.json" in script and "> /tmp/s3.json" in script
    assert "seaweeddata:/data" in store["volumes"]
    assert "/healthz" in " ".join(store["healthcheck"]["test"])
    assert store["restart"] == "unless-stopped"
    # Published on the loopback unless .env says otherwise (workers on other hosts).
    assert store["ports"] == ["${SEQTRAIN_S3_BIND:-127.0.0.1}:${SEQTRAIN_S3_PORT:-8333}:8333"]


def test_create_bucket_runs_once_after_the_store_is_healthy(services):
    once = services["create-bucket"]
    assert once["image"] == services["seaweedfs"]["image"]
    assert once["restart"] == "no"
    assert once["depends_on"] == {"seaweedfs": {"condition": "service_healthy"}}
    script = " ".join(command_of(once))
    assert f"s3.bucket.create -name {BUCKET}" in script and "s3.bucket.list" in script
    assert "weed shell -master=seaweedfs:9333" in script
    assert "exit 1" in script  # a bucket that cannot be made stops everything after it


def test_api_and_workers_use_the_store_and_share_no_volume(services):
    store_env = services["seaweedfs"]["environment"]
    for name in SEQTRAIN_SERVICES:
        service = services[name]
        # Only anonymous volumes (each container's own cache), no named, shared one.
        assert all(":" not in volume for volume in service["volumes"]), name
        env = service["environment"]
        assert env["ARTIFACT_ROOT"] == f"s3://{BUCKET}/artifacts", name
        assert env["SEQTRAIN_S3_ENDPOINT_URL"] == "http://seaweedfs:8333", name
        assert env["AWS_ACCESS_KEY_ID"] == store_env["S3_ACCESS_KEY"], name
        assert env["AWS_SECRET_ACCESS_KEY"] == store_env["S3_SECRET_KEY"], name
        assert env["SEQTRAIN_CACHE_BYTES"].startswith("${SEQTRAIN_CACHE_BYTES:-"), name
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
    assert set(resolved) >= EVERY_SERVICE - {"reconciler", "flower"}
    # docker-compose kept (and so understood) the newer keys rather than dropping them.
    worker = resolved["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"
    assert worker["environment"]["ARTIFACT_ROOT"] == f"s3://{BUCKET}/artifacts"
    assert worker["environment"]["AWS_ACCESS_KEY_ID"] == "seqtrain"  # from .env.example
    # Escaped (`$$`), not interpolated: the store's script reads its own environment.
    assert re.search(r'"\$+S3_ACCESS_KEY"', " ".join(command_of(resolved["seaweedfs"])))
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
    assert set(result.stdout.split()) == EVERY_SERVICE


def test_docker_compose_config_requires_the_secret_key(tmp_path):
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    result = run_config(env_file, "config")
    assert result.returncode != 0 and "set SEQTRAIN_SECRET_KEY in .env" in result.stderr
