"""The bounded fault-injection run (bench/chaos.py --small) against a real local deployment:
kill -9 of trainers, Redis flushed and restarted empty, PostgreSQL stopped mid-training."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


def test_small_chaos_run_loses_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--small"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    kill = figures["kill_9"]
    assert kill["kills"] == kill["jobs"] == kill["succeeded"] == 2
    assert kill["killed_jobs_resumed_exactly"] == kill["killed_jobs"] == 2
    assert kill["final_weights_equal_uninterrupted"] == 2
    assert kill["max_trainers_alive_per_job"] == 1
    for how in ("redis_flush", "redis_restart"):
        lost = figures[how]
        assert lost["messages_before"] == 6 and lost["messages_after"] == 0
        assert lost["succeeded"] == 6 and lost["ran_more_than_once"] == 0
        assert lost["max_attempt"] == 1
    outage = figures["database_outage"]
    if "skipped" in outage:
        pytest.fail(outage["skipped"])  # PostgreSQL's binaries come with the test set-up
    assert outage["job_status"] == "succeeded"
    assert set(outage["api_answers_during_outage"]) == {"503"}
