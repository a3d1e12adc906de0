"""The task plug-in contract: what the training loop asks a task, so that it never branches
on one. Each task's plug-in lives beside its head (classifier.py, tagger.py, lm.py,
seq2seq.py) and is found through `shared.registry.TASKS[name].plugin()`.

A plug-in owns how rows become examples (`prepare`), its model (`model_sizes`, `build_for`
and `build`), how many targets a batch carries (the weight of its mean loss), what training
and evaluation accumulate and finish into metrics, what inference returns (labels, tags,
samples, translations), and its section of a
finished job's evaluation report (`report`, numbers from shared.zoo.report).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.data.examples import Batch, Examples, Prepared, Splits
from shared.data.tokenization import Tokenizer
from shared.protocol import IGNORE_INDEX
from shared.registry import InferenceInputError, TaskInfo, task_info
from shared.spec import DataSpec, DecodingSpec, JobSpec, ModelSpec
from shared.zoo.encoders import pad_right

__all__ = [
    "INFERENCE_BATCH",
    "REPORT_EXAMPLES",
    "Evaluation",
    "InferenceInputError",
    "ReportSplit",
    "Task",
    "pad_batch",
]

# Texts a prediction request runs through the model at once.
INFERENCE_BATCH = 64
# Examples (or language-model windows) an evaluation report reads per split, at most.
REPORT_EXAMPLES = 20_000


def pad_batch(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, T), lengths (B,): the model's inputs."""
    return pad_right(sequences), torch.tensor([len(s) for s in sequences], dtype=torch.long)


@dataclass(frozen=True)
class ReportSplit:
    """One split an evaluation report covers: its encoded examples and the parsed rows they
    came from, index by index (texts and words for mistakes and examples; a token stream's
    rows are not used)."""

    name: str  # "validation" or "test"
    examples: Examples
    rows: list[Any]
    device: torch.device
    batch_size: int = 64
    limit: int = REPORT_EXAMPLES
    samples: bool = False  # language models: add generated samples
    seed: int = 0
    decoding: DecodingSpec | None = None  # seq2seq: how to translate the split

    def batches(self) -> Iterator[tuple[list[int], Batch]]:
        """(example indices, batch on the device) over the first `limit` examples of
        sequence examples (classification, tagging), batched by length."""
        for batch in self.examples.batch_order(self.batch_size, seed=None):
            kept = [i for i in batch if i < self.limit]
            if kept:
                tokens, lengths, targets = self.examples.collate(kept)
                device = self.device
                yield kept, (tokens.to(device), lengths.to(device), targets.to(device))


class Evaluation:
    """Sums over one evaluation's batches; `finish` turns the (all-reduced) sums into the
    task's metrics beside the loss. Every rank must return the same keys from `sums`.
    `add` is told the batch's example indices too (a seq2seq evaluation looks up the
    references as written); `samples` is what the evaluation shows a person (a few
    translations), stored beside its metrics."""

    def add(
        self,
        model: nn.Module,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
        indices: list[int],
    ) -> None:
        pass

    def sums(self) -> dict[str, float]:
        return {}

    def finish(self, loss: float, sums: dict[str, float]) -> dict[str, float]:
        return {}

    def samples(self) -> list[dict[str, Any]]:
        return []


class Task:
    """Defaults for a task whose targets are token ids with IGNORE_INDEX at unlabelled places."""

    name: str = ""
    # Evaluate each rank's share of the batches and all-reduce the sums (False: every rank
    # evaluates the whole set, for metrics that are not sums over batches).
    shard_evaluation: bool = True
    # Keys of `train_counts`, summed over an epoch's batches (the same on every rank).
    train_count_keys: tuple[str, ...] = ()
    # Whether the report reads the parsed rows behind the examples (texts, words).
    report_rows: bool = True

    @property
    def info(self) -> TaskInfo:
        return task_info(self.name)

    # How rows become examples: (data spec, seed, splits, tokenizer or None, labels or None)
    # -> Prepared, where a checkpoint's tokenizer and labels are reused when given.
    prepare_examples: Callable[..., Prepared]

    def prepare(
        self,
        data: DataSpec,
        seed: int,
        splits: Splits,
        tokenizer: Tokenizer | None,
        labels: list[str] | None,
    ) -> Prepared:
        return self.prepare_examples(data, seed, splits, tokenizer, labels)

    def model_sizes(self, tokenizer: Tokenizer, labels: list[str]) -> tuple[int, int]:
        """(vocab_size, num_labels) the model is built with: the tokenizer's ids and the
        label or tag count (at least 2)."""
        return tokenizer.vocab_size, max(len(labels), 2)

    def build_for(
        self, spec: JobSpec, vocab_size: int, num_labels: int, backbone: Path | None = None
    ) -> nn.Module:
        """The job's model (`model_sizes` gives the sizes); tasks that read more of the spec
        than its model section override this."""
        return self.build(spec.model, vocab_size, num_labels, spec.data.max_length, backbone)

    def build(
        self,
        model: ModelSpec,
        vocab_size: int,
        num_labels: int,
        max_length: int,
        backbone: Path | None = None,
    ) -> nn.Module:
        """The task's model; `backbone` is the base model's directory for type pretrained."""
        raise NotImplementedError

    def count_targets(self, targets: torch.Tensor) -> int:
        """How many targets the batch's mean loss averages over."""
        return int((targets != IGNORE_INDEX).sum())

    def interval_metrics(self, spec: JobSpec, loss: float) -> dict[str, float]:
        """Train metrics each log interval adds beside its mean loss (seq2seq: perplexity)."""
        return {}

    def train_counts(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, int]:
        """What a training step adds to the epoch's `train_count_keys`."""
        return {}

    def train_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        """Epoch metrics from the summed train counts (`weight` is the targets' count)."""
        return {}

    def evaluation(self, labels: list[str]) -> Evaluation:
        return Evaluation()

    def evaluation_for(self, spec: JobSpec, data: Prepared, examples: Examples) -> Evaluation:
        """The evaluation of `examples` (a split of `data`); by default `evaluation`."""
        return self.evaluation(data.labels)

    def predict(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        labels: list[str],
        max_length: int,
        texts: list[str] | None,
        tokens: list[list[str]] | None,
    ) -> list[dict[str, Any]]:
        """Answers to `POST /jobs/<id>/predict` (tasks whose facts say it serves `predict`)."""
        raise NotImplementedError

    def generate(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        prompt: str,
        length: int,
        temperature: float,
        top_k: int | None,
        seed: int | None,
    ) -> str:
        """The answer to `POST /jobs/<id>/generate` (tasks that serve `generate`)."""
        raise NotImplementedError

    def translate(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        texts: list[str],
        beam_size: int,
        length_penalty: float,
        max_length: int | None,
    ) -> list[dict[str, Any]]:
        """Answers to `POST /jobs/<id>/translate` (tasks that serve `translate`): each text's
        translation and score."""
        raise NotImplementedError

    def report(
        self, model: nn.Module, tokenizer: Tokenizer, labels: list[str], split: ReportSplit
    ) -> dict[str, Any] | None:
        """The split's section of the job's evaluation report (shared.zoo.report), the model
        in eval mode; None: the task has no report."""
        return None

    def report_summary(self, split: str, section: dict[str, Any]) -> dict[str, float]:
        """The section's headline numbers, keyed "<split>/<name>"."""
        return {}
