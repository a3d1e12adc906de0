"""Decoding speed of a trained seq2seq checkpoint: batched beam search (the serving path's
batches of similar length) against one sentence at a time, same beam, same sentences,
same process; sentences per second and sacrebleu BLEU of each. One JSON line.

    .venv/bin/python -m bench.decoding --checkpoint FILE.safetensors \
        [--data ../shared/datasets/multi30k/test2016.jsonl] [--beam 4] [--limit 1000]

`bench.model_quality multi30k-transformer` calls `measure_job` on the job it trained.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import torch

from bench.service import DATASETS, LocalService


def read_pairs(path: Path, source: str = "de", target: str = "en") -> tuple[list[str], list[str]]:
    pairs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [p[source] for p in pairs], [p[target] for p in pairs]


def measure(
    checkpoint: Path, sources: list[str], references: list[str], beam: int
) -> dict[str, Any]:
    from sacrebleu.metrics import BLEU

    from shared.zoo.predictor import load_predictor

    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    predictor = load_predictor(str(checkpoint), digest)
    task, model, tokenizer = predictor.task, predictor.model, predictor.tokenizer
    penalty = predictor.spec.decoding.length_penalty

    def timed(batched: bool) -> dict[str, Any]:
        started = time.perf_counter()
        with torch.no_grad():
            if batched:
                answers = task.translate(model, tokenizer, sources, beam, penalty, None)
            else:
                answers = [
                    task.translate(model, tokenizer, [s], beam, penalty, None)[0] for s in sources
                ]
        seconds = time.perf_counter() - started
        hypotheses = [a["translation"] for a in answers]
        bleu = BLEU()
        return {
            "sentences_per_s": round(len(sources) / seconds, 2),
            "seconds": round(seconds, 2),
            "bleu": round(bleu.corpus_score(hypotheses, [references]).score, 2),
            "signature": str(bleu.get_signature()),
        }

    # Batched first: the one-at-a-time run then finds the caches as warm as it leaves them.
    batched = timed(batched=True)
    one = timed(batched=False)
    return {
        "sentences": len(sources),
        "beam": beam,
        "threads": torch.get_num_threads(),
        "one_at_a_time": one,
        "batched": batched,
        "speedup": round(batched["sentences_per_s"] / one["sentences_per_s"], 2),
    }


def best_checkpoint(service: LocalService, job_id: int, into: Path) -> Path:
    """The job's checkpoint with the best validation BLEU, downloaded into `into`."""
    listed = service.client.get(f"/api/v1/jobs/{job_id}/checkpoints")["checkpoints"]
    best = max(listed, key=lambda c: c["metrics"].get("val/bleu", float("-inf")))
    request = urllib.request.Request(service.client.base_url + best["download_url"])  # noqa: S310
    request.add_header("Authorization", f"Bearer {service.client.token}")
    path = into / f"job-{job_id}-best.safetensors"
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        path.write_bytes(response.read())
    return path


def measure_job(service: LocalService, job_id: int, data: str, beam: int) -> dict[str, Any]:
    sources, references = read_pairs(DATASETS / data)
    with tempfile.TemporaryDirectory() as folder:
        return measure(best_checkpoint(service, job_id, Path(folder)), sources, references, beam)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DATASETS / "multi30k" / "test2016.jsonl")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args()
    sources, references = read_pairs(args.data)
    result = measure(args.checkpoint, sources[: args.limit], references[: args.limit], args.beam)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
