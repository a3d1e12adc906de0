"""Output kind "export": a trained job's bundle to download, one zip:

    model.safetensors  the model's weights (the checkpoint's `model` part alone)
    tokenizer.json     the tokenizer (shared.data.tokenization.tokenizer_from_dict reads it)
    labels.json        the label (or tag) names, in the order of the model's outputs
    spec.json          the job spec
    model.onnx         the model as ONNX (`params.onnx`, default true; when it has an export),
                       checked against PyTorch with onnxruntime
    README.md          the model card: the data, the spec, the metrics, the report's summary,
                       the ONNX graph's inputs and outputs and its parity with PyTorch

A model that cannot be exported to ONNX (type pretrained; a seq2seq encoder-decoder, whose
beam search decodes token by token) still gets its bundle; the card and the summary say why
the ONNX file is missing.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import save_file

from shared import jobs
from shared.data import datasets as registry
from worker.outputs import OutputContext, OutputFile

BUNDLE_FORMAT = "seqtrain.bundle/1"
# Steps reported as progress: the files, the ONNX export, its parity check, the zip.
STEPS = 4


def run(context: OutputContext) -> OutputFile:
    want_onnx = bool(context.output.params.get("onnx", True))
    started = time.perf_counter()
    folder = context.scratch / "bundle"
    folder.mkdir()
    context.progress(0, STEPS)
    write_files(context, folder)
    context.progress(1, STEPS)
    onnx = onnx_file(context, folder) if want_onnx else {"exported": False, "reason": "not asked"}
    context.progress(3, STEPS)
    (folder / "README.md").write_text(model_card(context, onnx), encoding="utf-8")
    name = f"job-{context.job.id}-export-{context.output.id}"
    path = context.scratch / f"{name}.zip"
    files = bundle(folder, path, name)
    context.progress(STEPS, STEPS)
    return OutputFile(
        path=path,
        filename=path.name,
        content_type="application/zip",
        summary={
            "files": files,
            "onnx": onnx,
            "bytes": path.stat().st_size,
            "parameters": parameter_counts(context),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )


def write_files(context: OutputContext, folder: Path) -> None:
    """The weights, tokenizer, labels and spec."""
    state = context.checkpoint
    weights = {name: tensor.contiguous() for name, tensor in state["model"].items()}
    metadata = {"format": BUNDLE_FORMAT, "task": context.spec.task, "job": str(context.job.id)}
    save_file(weights, str(folder / "model.safetensors"), metadata=metadata)
    _write_json(folder / "tokenizer.json", state["tokenizer"])
    _write_json(folder / "labels.json", list(state["labels"]))
    _write_json(folder / "spec.json", context.spec.model_dump(mode="json"))


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def onnx_file(context: OutputContext, folder: Path) -> dict[str, Any]:
    """Export model.onnx and check it against PyTorch; what the card and summary say of it.
    A model without an export, or one that does not match, leaves no file and a reason."""
    from shared.zoo.onnx import (
        OUTPUTS,
        PARITY_TOLERANCE,
        NotExportable,
        check_parity,
        export_onnx,
        parity_shapes,
    )

    if context.spec.task not in OUTPUTS:
        return {
            "exported": False,
            "reason": f"a {context.spec.task} model has no ONNX export yet (its decoder runs "
            "a beam search token by token); the bundle holds its trained weights, tokenizer "
            "and spec",
        }
    predictor, path = context.predictor, folder / "model.onnx"
    max_length = context.spec.data.max_length
    try:
        info = export_onnx(predictor.model, context.spec.task, path, max_length)
    except NotExportable as exc:
        return {"exported": False, "reason": str(exc)}
    except Exception as exc:  # the exporter's own failure: the bundle is still worth having
        path.unlink(missing_ok=True)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"exported": False, "reason": f"the ONNX exporter failed: {first[:300]}"}
    context.progress(2, STEPS)
    shapes = parity_shapes(max_length)
    worst = check_parity(predictor.model, path, predictor.tokenizer.vocab_size, shapes)
    parity = {
        "max_abs_diff": worst,
        "tolerance": PARITY_TOLERANCE,
        "shapes": [list(shape) for shape in shapes],
    }
    if not worst <= PARITY_TOLERANCE:
        path.unlink()
        return {
            "exported": False,
            "reason": f"the ONNX graph differs from PyTorch by {worst:.3g} (over {PARITY_TOLERANCE})",
            "parity": parity,
        }
    return {"exported": True, **info, "parity": parity}


def bundle(folder: Path, path: Path, name: str) -> dict[str, int]:
    """Zip `folder`'s files under the directory `name`/; each file's size."""
    files: dict[str, int] = {}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for item in sorted(folder.iterdir()):
            archive.write(item, f"{name}/{item.name}")
            files[item.name] = item.stat().st_size
    return files


def parameter_counts(context: OutputContext) -> dict[str, int]:
    """Parameters of the whole model, and those the bundle's weights hold."""
    model = context.predictor.model
    total = sum(p.numel() for p in model.parameters())
    stored = sum(t.numel() for t in context.checkpoint["model"].values())
    return {"total": total, "in_weights": stored}


def final_metrics(context: OutputContext) -> dict[str, float]:
    """The job's newest value of each metric ("val/accuracy": 0.9), else the checkpoint's."""
    latest = jobs.latest_metrics(context.db, [context.job.id]).get(context.job.id, {})
    if latest:
        return {name: float(entry["value"]) for name, entry in sorted(latest.items())}
    return {k: float(v) for k, v in sorted((context.checkpoint.get("metrics") or {}).items())}


def data_lines(context: OutputContext) -> list[str]:
    """One Markdown line per dataset the job read."""
    data = context.spec.data
    lines = []
    for role, reference in (
        ("training", data.dataset),
        ("validation", data.validation_dataset),
        ("test", data.test_dataset),
    ):
        if reference is None:
            continue
        line = f"- {role}: `{reference}`"
        stored = _stored_dataset(context, reference)
        if stored is not None:
            line += (
                f" ({stored.name}, {stored.format}, {stored.rows} rows, sha256 `{stored.sha256}`)"
            )
        lines.append(line)
    if data.validation_dataset is None:
        lines.append(f"- validation: {data.val_fraction:g} of the training data, held out")
    return lines


def _stored_dataset(context: OutputContext, reference: str) -> Any:
    number = reference.removeprefix("dataset:")
    if not (reference.startswith("dataset:") and number.isdigit()):
        return None
    return registry.get_dataset(context.db, int(number))


def model_card(context: OutputContext, onnx: dict[str, Any]) -> str:
    """The bundle's README.md."""
    spec, job = context.spec, context.job
    counts = parameter_counts(context)
    sections = [
        f"# {spec.name}\n",
        f"Seqtrain job {job.id}: a `{spec.task}` model of type `{spec.model.type}`, "
        f"{counts['total']:,} parameters.\n",
        _weights_note(context, counts),
        "## Data\n\n" + "\n".join(data_lines(context)) + "\n",
        "## Metrics\n\n" + _table(final_metrics(context)) + "\n",
    ]
    if context.report is not None:
        summary = context.report.get("summary") or {}
        sections.append("## Evaluation report\n\n" + _table(summary) + "\n")
    sections.append(_onnx_section(context, onnx))
    sections.append(
        "## Spec\n\n```yaml\n"
        + yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
        + "```\n"
    )
    return "\n".join(sections)


def _weights_note(context: OutputContext, counts: dict[str, int]) -> str:
    base = context.checkpoint.get("base_model")
    note = (
        "## Files\n\n"
        "- `model.safetensors`: the weights (the state dict of the model the task's plug-in "
        "builds: `task.build_for(spec, *task.model_sizes(tokenizer, labels))`)\n"
        "- `tokenizer.json`: the tokenizer (`shared.data.tokenization.tokenizer_from_dict`)\n"
        "- `labels.json`: the label names, in the order of the model's outputs (none for "
        "language models and seq2seq)\n"
        "- `spec.json`: the job spec\n"
    )
    if base:
        note += (
            f"\nThe model was fine-tuned from base model `{base}`: `model.safetensors` holds "
            f"only the trained part ({counts['in_weights']:,} of {counts['total']:,} "
            "parameters); load the base model's own weights first.\n"
        )
    return note


def _table(values: dict[str, Any]) -> str:
    if not values:
        return "None recorded.\n"
    rows = ["| metric | value |", "|---|---|"]
    rows += [f"| {name} | {_number(value)} |" for name, value in values.items()]
    return "\n".join(rows) + "\n"


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _onnx_section(context: OutputContext, onnx: dict[str, Any]) -> str:
    if not onnx.get("exported"):
        return f"## ONNX\n\nNo `model.onnx`: {onnx.get('reason')}.\n"
    parity = onnx["parity"]
    shapes = " and ".join(f"({b}, {t})" for b, t in parity["shapes"])
    lines = [
        "## ONNX\n",
        f"`model.onnx` (opset {onnx['opset']}), dynamic in batch and length:\n",
        "| | name | type | shape |",
        "|---|---|---|---|",
    ]
    for kind in ("inputs", "outputs"):
        for value in onnx[kind]:
            shape = ", ".join(str(d) for d in value["shape"])
            lines.append(f"| {kind[:-1]} | `{value['name']}` | {value['dtype']} | ({shape}) |")
    lines.append(
        f"\nParity with PyTorch under onnxruntime: max absolute difference "
        f"{parity['max_abs_diff']:.3g} (tolerance {parity['tolerance']:g}) at (batch, length) "
        f"{shapes}, with mixed lengths.\n"
    )
    if context.spec.task == "tagging" and context.spec.model.crf:
        lines.append(
            "The graph returns the emissions; the CRF's Viterbi decoding stays outside it "
            "(its `crf.transitions`, `crf.start_transitions` and `crf.end_transitions` are "
            "in `model.safetensors`).\n"
        )
    lines.append(_usage(context))
    return "\n".join(lines)


def _usage(context: OutputContext) -> str:
    output = {"classification": "logits", "tagging": "emissions"}.get(context.spec.task, "logits")
    return (
        "Tokens are right-padded with 0, `lengths` counts each row's real tokens:\n\n"
        "```python\n"
        "import json, numpy as np, onnxruntime\n"
        "from shared.data.tokenization import tokenizer_from_dict\n\n"
        'tokenizer = tokenizer_from_dict(json.load(open("tokenizer.json")))\n'
        'labels = json.load(open("labels.json"))\n'
        f"ids = [tokenizer.encode(t, {context.spec.data.max_length}) for t in texts]\n"
        "tokens = np.zeros((len(ids), max(map(len, ids))), dtype=np.int64)\n"
        "for row, seq in enumerate(ids):\n"
        "    tokens[row, : len(seq)] = seq\n"
        "lengths = np.array([len(seq) for seq in ids], dtype=np.int64)\n"
        'session = onnxruntime.InferenceSession("model.onnx")\n'
        f'({output},) = session.run(None, {{"tokens": tokens, "lengths": lengths}})\n'
        "```\n"
    )
