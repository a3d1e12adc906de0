"""The published contract: schemathesis fuzzes the live API from its own OpenAPI document
(zero 5xx, zero responses that break the schema), and every spec the schema accepts
round-trips through the API and the database unchanged (hypothesis)."""

import json
import threading

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.serving import make_server

import api.board
import api.compare
import api.datasets
import api.exports
import api.health
import api.jobs  # noqa: F401  (registers the routes the document describes)
import api.logs
import api.models
import api.outputs
import api.reports
import api.sessions
import api.stream
import api.sweeps
import api.tensorboard
import api.workers  # noqa: F401
from api.openapi import document
from shared import jobs
from shared.spec import parse_spec
from tests.conftest import ROOT, authed_client

# Fuzzing every route takes minutes on a loaded machine: outside the fast tier.
pytestmark = pytest.mark.slow

SCHEMA = schemathesis.openapi.from_dict(document())
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
REQUESTS: list[int] = []


@pytest.fixture
def live_api(app, accounts, db):
    """A real HTTP server with a few of alice's jobs, so ids in paths sometimes exist."""
    for name in ("first", "second"):
        jobs.create_job(
            db,
            parse_spec({"name": name, "resources": {"queue": "nobody-listens"}}),
            accounts["alice"].user_id,
        )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", accounts["alice"].headers
    server.shutdown()
    thread.join()


def test_openapi_document_is_3_1_and_complete(anon):
    doc = anon.get("/api/v1/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["schemas"]["JobSpec"]["additionalProperties"] is False
    operations = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert ("POST", "/api/v1/jobs") in operations and ("GET", "/healthz") in operations
    assert doc["paths"]["/api/v1/jobs"]["post"]["responses"]["422"]["content"]["application/json"]


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, live_api):
    base_url, headers = live_api
    # Our token last: schemathesis may draw an Authorization header of its own.
    response = case.call(base_url=base_url, headers={**(case.headers or {}), **headers})
    REQUESTS.append(response.status_code)
    case.validate_response(response, checks=CHECKS)


@pytest.fixture(scope="module", autouse=True)
def _report_request_count():
    yield
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    counts: dict[str, int] = {}
    for status in REQUESTS:
        counts[str(status)] = counts.get(str(status), 0) + 1
    (out / "schemathesis.json").write_text(
        json.dumps({"requests": len(REQUESTS), "by_status": counts})
    )


# ---------------------------------------------------------------- spec round trip


def accepted(candidate: dict) -> bool:
    try:
        parse_spec(candidate)
    except ValidationError:
        return False
    return True


# Bodies drawn from the published schema for POST /jobs, kept when the service accepts them
# (the schema cannot express every rule, e.g. the parameter-count bound).
specs = (
    SCHEMA["/api/v1/jobs"]["POST"]
    .as_strategy()
    .map(lambda case: case.body)
    .filter(lambda body: isinstance(body, dict) and accepted(body))
)


def leaves(value, path=()):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from leaves(inner, (*path, key))
    else:
        yield path, value


@given(spec=specs, queue=st.just("nobody-listens"))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_accepted_spec_round_trips_unchanged(app, accounts, db, spec, queue):
    client = authed_client(app, accounts["root"])  # an admin: `preemptible: false` is theirs
    spec.setdefault("resources", {})
    if isinstance(spec["resources"], dict):
        spec["resources"]["queue"] = queue
    # Dataset references must name data that exists: use the built-in classification set.
    for field in ("dataset", "validation_dataset", "test_dataset"):
        if isinstance(spec.get("data"), dict) and spec["data"].get(field) is not None:
            builtin = {
                "language_modeling": "stories",
                "tagging": "entities",
                "seq2seq": "dates",
            }.get(spec.get("task"), "sentiment")
            spec["data"][field] = f"builtin:{builtin}"
    if not accepted(spec):
        return
    response = client.post("/api/v1/jobs", json=spec)
    assert response.status_code == 201, response.json
    job_id = response.json["id"]
    stored = client.get(f"/api/v1/jobs/{job_id}").json["spec"]
    assert stored == parse_spec(spec).model_dump(mode="json")  # defaults filled in, nothing else
    for path, value in leaves(spec):
        node = stored
        for key in path:
            node = node[key]
        assert node == value and type(node) is type(value), path
    assert jobs.get_job(db, job_id).spec == stored


def test_the_round_trip_strategy_is_not_vacuous():
    """The filter keeps real, varied specs (a strategy that rejects everything tests nothing).
    Derandomized: a check of the strategy, not a search, it must not depend on the draw."""
    seen = []

    @given(specs)
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def collect(spec):
        seen.append(spec)

    collect()
    assert len(seen) >= 20
    assert len({json.dumps(s, sort_keys=True) for s in seen}) >= 10
    sections = {key for spec in seen for key in spec}
    assert len(sections & {"model", "training", "data", "resources", "checkpoint"}) >= 2
