"""A sweep is held to its owner's limits trial by trial, on real SQL: a search space over
`resources.priority`, `devices`, `nodes` or `preemptible` whose values would take a trial
past them is a 422 naming the parameter, nothing stored; within them it is accepted."""

from __future__ import annotations

import pytest

from shared import jobs
from tests.conftest import authed_client
from tests.test_quotas import limit
from tests.test_sweeps_api import sweep_request


def over(**parameters) -> dict:
    return sweep_request(parameters={**sweep_request()["parameters"], **parameters})


def refused(client, db, body: dict) -> list[tuple[str, str]]:
    answer = client.post("/api/v1/sweeps", json=body)
    assert answer.status_code == 422, answer.json
    assert answer.json["error"]["message"].startswith("invalid sweep: parameters.resources.")
    assert client.get("/api/v1/sweeps").json["sweeps"] == []  # nothing stored
    assert jobs.list_jobs(db)[0] == []
    return [(f["path"], f["message"]) for f in answer.json["error"]["fields"]]


# Accepted sweeps stay running: no reconciler makes their trials meanwhile.
pytestmark = pytest.mark.usefixtures("reconcilers_paused")
PRIORITY = "parameters.resources.priority"


@pytest.mark.parametrize(
    ("parameter", "why"),
    [
        ({"type": "int", "low": 10, "high": 90}, "priority 90 is above your limit of 60 (at "),
        ({"type": "categorical", "choices": ["low", "high"]}, "priority 75 is above your limit"),
    ],
)
def test_a_priority_range_past_max_priority_is_refused(client, db, parameter, why):
    limit(db, "alice", max_priority=60)
    fields = refused(client, db, over(**{"resources.priority": parameter}))
    assert [path for path, _ in fields] == [PRIORITY]
    assert why in fields[0][1]


def test_devices_and_nodes_are_checked_together(client, db):
    limit(db, "alice", max_devices=4)
    body = over(
        **{
            "resources.devices": {"type": "int", "low": 1, "high": 2},
            "resources.nodes": {"type": "categorical", "choices": [3, 1]},
        }
    )
    fields = refused(client, db, body)  # 2 or 3 alone fit; 2 x 3 does not
    assert [path for path, _ in fields] == ["parameters.resources.devices"]
    assert "resources.devices = 2, resources.nodes = 3" in fields[0][1]


def test_only_an_admin_may_sweep_over_preemptible(app, client, db, accounts):
    body = over(**{"resources.preemptible": {"type": "categorical", "choices": [True, False]}})
    fields = refused(client, db, body)
    assert fields == [
        (
            "parameters.resources.preemptible",
            "only an admin may submit a job that cannot be preempted "
            "(at resources.preemptible = False)",
        )
    ]
    admitted = authed_client(app, accounts["root"]).post("/api/v1/sweeps", json=body)
    assert admitted.status_code == 201, admitted.json


def test_a_search_space_within_the_limits_is_accepted(client, db):
    limit(db, "alice", max_priority=60, max_devices=4)
    body = over(
        **{
            "resources.priority": {"type": "int", "low": 10, "high": 60},
            "resources.devices": {"type": "categorical", "choices": [1, 2]},
            "resources.nodes": {"type": "int", "low": 1, "high": 2},
        }
    )
    answer = client.post("/api/v1/sweeps", json=body)
    assert answer.status_code == 201, answer.json
