"""Model quality through the service: upload the real data sets, submit the example specs,
wait, and print one JSON line per experiment plus a summary line (wall times in seconds).

    .venv/bin/python -m bench.model_quality sst2 shakespeare conll

sst2         examples/sst2.yaml         dev accuracy (target >= 0.83)
shakespeare  examples/shakespeare.yaml  char-level validation loss, nats/char (target <= 1.60 in 20 min)
conll        examples/conll2003.yaml    dev entity F1, CoNLL way (target >= 0.85)
multi30k-transformer  examples/multi30k-transformer.yaml     test2016 BLEU (target >= 33)
multi30k-lstm         examples/multi30k-lstm-attention.yaml  test2016 BLEU (target >= 25)

The Multi30k experiments also translate test2016 through POST /translate with the best
checkpoint, greedy and with the spec's beam, and score both with sacrebleu (the signature
printed), then time batched beam search against one sentence at a time on the same
checkpoint (bench.decoding).
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


MULTI30K_UPLOADS = [
    (f"multi30k/{file}", name, {"format": "jsonl", "source_column": "de", "target_column": "en"})
    for file, name in (
        ("train.jsonl", "multi30k-train"),
        ("val.jsonl", "multi30k-val"),
        ("test2016.jsonl", "multi30k-test2016"),
    )
]
EXPERIMENTS.update(
    {
        "multi30k-transformer": {
            "spec": "examples/multi30k-transformer.yaml",
            "uploads": MULTI30K_UPLOADS,
            "metric": "val/bleu",
            "best": max,
            "translate": "multi30k/test2016.jsonl",
            "decoding_bench": True,
        },
        "multi30k-lstm": {
            "spec": "examples/multi30k-lstm-attention.yaml",
            "uploads": MULTI30K_UPLOADS,
            "metric": "val/bleu",
            "best": max,
            "translate": "multi30k/test2016.jsonl",
            "decoding_bench": True,
        },
    }
)


def translation_scores(service: LocalService, job_id: int, path: str, beam: int) -> dict[str, Any]:
    """test2016 translated through POST /translate (greedy and `beam`), scored by sacrebleu."""
    from sacrebleu.metrics import BLEU, CHRF

    from bench.decoding import read_pairs

    sources, targets = read_pairs(DATASETS / path)
    references = [targets]
    scores: dict[str, Any] = {}
    for label, size in (("greedy", 1), (f"beam{beam}", beam)):
        started, hypotheses = time.perf_counter(), []
        for first in range(0, len(sources), 64):
            body = {"texts": sources[first : first + 64], "beam_size": size}
            answer = service.client.post(f"/api/v1/jobs/{job_id}/translate", body)
            hypotheses += [t["translation"] for t in answer["translations"]]
        bleu, chrf = BLEU(), CHRF()
        scores[label] = {
            "bleu": round(bleu.corpus_score(hypotheses, references).score, 2),
            "chrf": round(chrf.corpus_score(hypotheses, references).score, 2),
            "seconds": round(time.perf_counter() - started, 1),
        }
        scores["signature"] = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
    return scores


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
    result = {
        "experiment": name,
        "status": job["status"],
        "error": job["error"],
        "metric": experiment["metric"],
        "final": values[-1] if values else None,
        "best": experiment["best"](values) if values else None,
        "by_epoch": [round(v, 4) for v in values],
        "epochs": job["epoch"],
        "steps": job["step"],
        "wall_s": round(wall, 1),
        "job_running_s": round(training_s, 1),
        "spec": spec,
    }
    if "translate" in experiment and job["status"] == "succeeded":
        beam = spec.get("decoding", {}).get("beam_size", 4)
        result["test2016"] = translation_scores(service, job["id"], experiment["translate"], beam)
        if experiment.get("decoding_bench"):
            from bench.decoding import measure_job

            result["decoding"] = measure_job(service, job["id"], experiment["translate"], beam)
    return result


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
                r["experiment"]: {
                    "metric": r["metric"],
                    "best": r["best"],
                    "wall_s": r["wall_s"],
                    **({"test2016": r["test2016"]} if "test2016" in r else {}),
                }
                for r in results
            }
        )
    )


if __name__ == "__main__":
    main()
