"""Output kind "predictions": a trained job's predictor over every row of a dataset, written
as JSONL (one object a line, the default) or CSV (`params.format`).

    classification     {"row": 0, "text": ..., "label": "pos", "probabilities": {"neg": 0.1, ...}}
    tagging            {"row": 0, "tokens": [...], "tags": [...]}
    language modelling {"row": 0, "prompt": ..., "text": ...}   (each row's text a prompt)
    seq2seq            {"row": 0, "source": ..., "translation": ..., "score": -0.31,
                        "reference": ...}   (each row's source, or text; its target, if any,
                        kept as the reference; decoded with params beam_size, length_penalty,
                        max_length, else the spec's decoding)

CSV has the same fields flattened: probabilities as `p_<label>` columns, tokens and tags
joined by spaces. Rows go through the predictor a batch at a time, with progress after each.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from typing import IO, Any

from shared.data import datasets as registry
from shared.infra.cache import cache_for
from shared.protocol import TrainerFailure
from shared.registry import task_info
from shared.zoo.task import INFERENCE_BATCH
from worker.outputs import OutputContext, OutputFile

CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


def run(context: OutputContext) -> OutputFile:
    params = context.output.params
    fmt = params.get("format", "jsonl")
    if fmt not in CONTENT_TYPES:
        raise TrainerFailure(f"unknown format {fmt!r}; valid: {', '.join(CONTENT_TYPES)}")
    rows = dataset_rows(context)
    started = time.perf_counter()
    path = context.scratch / f"predictions.{fmt}"
    total = len(rows)
    context.progress(0, total)
    with path.open("w", encoding="utf-8", newline="") as handle:
        write = _csv_writer(handle, context.predictor.labels) if fmt == "csv" else _jsonl(handle)
        for start in range(0, total, INFERENCE_BATCH):
            for record in predict_batch(context, rows, start, start + INFERENCE_BATCH):
                write(record)
            context.progress(min(start + INFERENCE_BATCH, total), total)
    seconds = time.perf_counter() - started
    return OutputFile(
        path=path,
        filename=f"job-{context.job.id}-predictions-{context.output.id}.{fmt}",
        content_type=CONTENT_TYPES[fmt],
        summary={
            "rows": total,
            "seconds": round(seconds, 4),
            "rows_per_second": round(total / seconds, 2) if seconds > 0 else None,
            "format": fmt,
            "dataset": params.get("dataset"),
        },
    )


def dataset_rows(context: OutputContext) -> list[dict[str, Any]]:
    """The rows of the output's dataset (a stored upload, or a built-in by reference)."""
    output = context.output
    resolved: registry.Resolved | None
    if output.dataset_id is not None:
        resolved = registry.get_dataset(context.db, output.dataset_id)
    else:
        reference = str(output.params.get("dataset", ""))
        builtin = registry.BUILTIN_DATASETS.get(reference.removeprefix("builtin:"))
        resolved = builtin if reference.startswith("builtin:") else None
    if resolved is None:
        raise TrainerFailure(f"the dataset {output.params.get('dataset')} was deleted")
    parsed = registry.load(resolved, context.store, cache_for(context.settings))
    return parsed.rows


def predict_batch(
    context: OutputContext, rows: list[dict[str, Any]], start: int, end: int
) -> Iterator[dict[str, Any]]:
    """The records of rows[start:end], each with its row number."""
    predictor, batch = context.predictor, rows[start:end]
    serves = task_info(context.spec.task).serves
    if serves == "generate":
        yield from _generate(context, batch, start)
        return
    if serves == "translate":
        yield from _translate(context, batch, start)
        return
    if batch and "tokens" in batch[0]:
        answers = predictor.predict(None, [row["tokens"] for row in batch])
        for number, answer in enumerate(answers, start):
            yield {"row": number, "tokens": answer["tokens"], "tags": answer["tags"]}
        return
    texts = [row["text"] for row in batch]
    answers = predictor.predict(texts, None)
    for number, (text, answer) in enumerate(zip(texts, answers, strict=True), start):
        if "tags" in answer:  # a tagger over plain texts, split on whitespace
            yield {"row": number, "tokens": answer["tokens"], "tags": answer["tags"]}
        else:
            yield {
                "row": number,
                "text": text,
                "label": answer["label"],
                "probabilities": answer["probabilities"],
            }


def _generate(
    context: OutputContext, batch: list[dict[str, Any]], start: int
) -> Iterator[dict[str, Any]]:
    params = context.output.params
    seed = params.get("seed")
    for number, row in enumerate(batch, start):
        prompt = row["text"]
        text = context.predictor.generate(
            prompt,
            int(params.get("length", 100)),
            float(params.get("temperature", 0.8)),
            params.get("top_k"),
            None if seed is None else int(seed) + number,  # reproducible, and per row
        )
        yield {"row": number, "prompt": prompt, "text": text}


def _translate(
    context: OutputContext, batch: list[dict[str, Any]], start: int
) -> Iterator[dict[str, Any]]:
    """One call of the task's translate a batch (None settings: the spec's decoding)."""
    params = context.output.params
    sources = [str(row.get("source", row.get("text", ""))) for row in batch]
    answers = context.predictor.translate(
        sources, params.get("beam_size"), params.get("length_penalty"), params.get("max_length")
    )
    for number, (row, source, answer) in enumerate(
        zip(batch, sources, answers, strict=True), start
    ):
        record = {
            "row": number,
            "source": source,
            "translation": answer["translation"],
            "score": answer["score"],
        }
        if "target" in row:
            record["reference"] = row["target"]
        yield record


def _jsonl(handle: IO[str]) -> Any:
    def write(record: dict[str, Any]) -> None:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    return write


def _csv_writer(handle: IO[str], labels: list[str]) -> Any:
    """A writer of flattened records; the header follows the first record's fields."""
    writer: csv.DictWriter[str] | None = None

    def write(record: dict[str, Any]) -> None:
        nonlocal writer
        flat = flatten(record)
        if writer is None:
            writer = csv.DictWriter(handle, fieldnames=list(flat))
            writer.writeheader()
        writer.writerow(flat)

    return write


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """A record as CSV cells: probabilities as p_<label>, lists joined by spaces."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key == "probabilities":
            flat.update({f"p_{label}": p for label, p in value.items()})
        elif isinstance(value, list):
            flat[key] = " ".join(value)
        else:
            flat[key] = value
    return flat
