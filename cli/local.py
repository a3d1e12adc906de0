"""`seqtrain train --local`: train a spec in this process with the service's trainer code,
without the API or the queue."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from cli.common import fail, json_option, load_spec


def _local_splits(files: tuple[str | None, ...], fmt: str | None, options: dict[str, Any]) -> Any:
    """The training, validation and test files given on the command line, parsed."""
    from shared.data.examples import Splits

    train, validation, test = (_local_file(f, fmt, options) for f in files)
    return Splits(train, validation, test)


def _local_file(path: str | None, fmt: str | None, options: dict[str, Any]) -> Any:
    if path is None:
        return None
    from shared.data.datasets import DatasetUpload, parse
    from shared.data.formats import DatasetFormatError

    if fmt is None:
        fail("--format is required with data files")
    try:
        upload = DatasetUpload.model_validate(
            {"format": fmt, **{k: v for k, v in options.items() if v is not None}}
        )
        return parse(Path(path).read_bytes(), upload.format, upload.parse_options())
    except DatasetFormatError as exc:
        fail(f"{path}: {exc}")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except ValueError as exc:
        fail(str(exc))


@contextlib.contextmanager
def _local_backbone(path: str | None, reference: str | None) -> Iterator[Path | None]:
    """The base model's folder: `path` itself, or an archive checked and unpacked into a
    temporary folder as an upload would be (no pickle, no code, no escaping paths)."""
    if reference is None:
        if path is not None:
            fail("--base-model applies to a spec with model.type pretrained")
        yield None
        return
    if path is None:
        fail(f"model.pretrained is {reference!r}: give its files with --base-model DIR|ARCHIVE")
    if Path(path).is_dir():
        yield Path(path)
        return
    from shared.hub import archive
    from shared.settings import Settings

    limit = Settings.from_env().max_model_bytes
    with tempfile.TemporaryDirectory(prefix="seqtrain-base-") as folder:
        try:
            archive.unpack(Path(path), Path(folder) / "model", limit)
        except archive.ModelArchiveError as exc:
            fail(f"{path}: {exc}")
        yield Path(folder) / "model"


def _checkpoint_writer(output: str | None) -> Callable[..., None]:
    """What the local run's reporter saves with: each checkpoint into `output`, or nothing."""
    from shared.zoo.checkpoints import save_checkpoint

    out_dir = Path(output) if output else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)

    def save(
        state: dict[str, Any], epoch: int, step: int, metrics: dict[str, float], is_best: bool
    ) -> None:
        if out_dir is not None:
            save_checkpoint(
                out_dir / f"step-{step:09d}{'-best' if is_best else ''}.safetensors", state
            )

    return save


@click.command("train")
@click.argument("spec_file", type=click.Path(dir_okay=False))
@click.option(
    "--local", is_flag=True, required=True, help="Train in this process, without the queue."
)
@click.option("--train-file", help="Training data (default: the spec's built-in dataset).")
@click.option(
    "--validation-file", help="Validation data (default: val_fraction of the training data)."
)
@click.option("--test-file", help="Test data, evaluated once at the end.")
@click.option("--format", "fmt", type=click.Choice(["tsv", "csv", "jsonl", "text", "conll"]))
@click.option("--text-column")
@click.option("--label-column")
@click.option("--source-column", help="seq2seq: the source side's column (jsonl: field).")
@click.option("--target-column", help="seq2seq: the target side's column (jsonl: field).")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--output", type=click.Path(file_okay=False), help="Directory for checkpoints.")
@click.option(
    "--base-model",
    type=click.Path(exists=True),
    help="type pretrained: the base model, a Hugging Face directory or its .zip / .tar.gz.",
)
@json_option
def train_local(
    spec_file: str,
    local: bool,
    train_file: str | None,
    validation_file: str | None,
    test_file: str | None,
    fmt: str | None,
    text_column: str | None,
    label_column: str | None,
    source_column: str | None,
    target_column: str | None,
    encoding: str,
    output: str | None,
    base_model: str | None,
    as_json: bool,
) -> None:
    """Train SPEC_FILE here with the service's trainer code; prints the final metrics."""
    from pydantic import ValidationError

    from shared.data.examples import load_splits
    from shared.spec import parse_spec
    from worker.trainer import Reporter, train

    try:
        spec = parse_spec(load_spec(spec_file))
    except ValidationError as exc:
        fail(
            "invalid spec:\n"
            + "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        )
    options = {
        "text_column": text_column,
        "label_column": label_column,
        "source_column": source_column,
        "target_column": target_column,
        "encoding": encoding,
    }
    files = (train_file, validation_file, test_file)
    splits = _local_splits(files, fmt, options) if train_file else load_splits(spec, None)
    save = _checkpoint_writer(output)
    # With --json, stdout carries only the result; the trainer's progress goes to stderr.
    with (
        _local_backbone(base_model, spec.model.pretrained) as backbone,
        contextlib.redirect_stdout(sys.stderr if as_json else sys.stdout),
    ):
        report = Reporter(lambda rows, epoch, step: None, save)
        result = train(spec, report, splits=splits, backbone=backbone)
    summary = {
        "step": result.step,
        "epoch": result.epoch,
        "stopped_early": result.stopped_early,
        **result.metrics,
    }
    click.echo(
        json.dumps(summary) if as_json else "\n".join(f"{k}: {v}" for k, v in summary.items())
    )
