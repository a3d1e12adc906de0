"""Model quality through the service: upload the real data sets, submit the example specs,
wait, and print one JSON line per experiment plus a summary line (wall times in seconds).

    .venv/bin/python -m bench.model_quality sst2 shakespeare conll

sst2         examples/sst2.yaml         dev accuracy (target >= 0.83)
shakespeare  examples/shakespeare.yaml  char-level validation loss, nats/char (target <= 1.60 in 20 min)
conll        examples/conll2003.yaml    dev entity F1, CoNLL way (target >= 0.85)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

import yaml

from bench.service import DATASETS, ROOT, LocalService

EXPERIMENTS: dict[str, dict[str, Any]] = {
    "sst2": {
        "spec": "examples/sst2.yaml",
        "uploads": [
            (
                "sst2/train.tsv",
                "sst2-train",
                {"format": "tsv", "text_column": "sentence", "label_column": "label"},
            ),
            (
                "sst2/dev.tsv",
                "sst2-dev",
                {"format": "tsv", "text_column": "sentence", "label_column": "label"},
            ),
        ],
        "metric": "val/accuracy",
        "best": max,
    },
    "shakespeare": {
        "spec": "examples/shakespeare.yaml",
        "uploads": [("tinyshakespeare/input.txt", "shakespeare", {"format": "text"})],
        "metric": "val/loss",
        "best": min,
    },
    "conll": {
        "spec": "examples/conll2003.yaml",
        "uploads": [
            ("conll2003/train.txt", "conll-train", {"format": "conll"}),
            ("conll2003/dev.txt", "conll-dev", {"format": "conll"}),
        ],
        "metric": "val/f1",
        "best": max,
    },
}


def run(service: LocalService, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    experiment = EXPERIMENTS[name]
    for path, dataset_name, options in experiment["uploads"]:
        service.upload(DATASETS / path, dataset_name, **options)
    spec = yaml.safe_load((ROOT / experiment["spec"]).read_text())
    for section, values in overrides.items():
        spec.setdefault(section, {}).update(values)
    started = time.perf_counter()
    job = service.wait(service.client.post("/api/v1/jobs", spec)["id"])
    wall = time.perf_counter() - started
    series = service.client.get(
        f"/api/v1/jobs/{job['id']}/metrics?split=val&name={experiment['metric'].split('/')[1]}"
    )
    values = [m["value"] for m in series["metrics"]]
    training_s = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    return {
        "experiment": name,
        "status": job["status"],
        "error": job["error"],
        "metric": experiment["metric"],
        "final": values[-1] if values else None,
        "best": experiment["best"](values) if values else None,
        "epochs": job["epoch"],
        "steps": job["step"],
        "wall_s": round(wall, 1),
        "job_running_s": round(training_s, 1),
        "spec": spec,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "experiments", nargs="*", default=list(EXPERIMENTS), choices=list(EXPERIMENTS)
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help='section=JSON, e.g. training={"epochs": 1} (for a quick check)',
    )
    args = parser.parse_args()
    overrides = {o.split("=", 1)[0]: json.loads(o.split("=", 1)[1]) for o in args.override}
    if not DATASETS.exists():
        print(f"{DATASETS} is not present", file=sys.stderr)
        sys.exit(2)
    results = []
    with LocalService(workers=1) as service:
        for name in args.experiments:
            results.append(run(service, name, overrides))
            print(json.dumps(results[-1]), flush=True)
    print(
        json.dumps(
            {
                r["experiment"]: {"metric": r["metric"], "best": r["best"], "wall_s": r["wall_s"]}
                for r in results
            }
        )
    )


if __name__ == "__main__":
    main()
