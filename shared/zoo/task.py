"""The task plug-in contract: what the training loop asks a task, so that it never branches
on one. Each task's plug-in lives beside its head (classifier.py, tagger.py, lm.py) and is
found through `shared.registry.TASKS[name].plugin()`.

A plug-in owns how rows become examples (`prepare`), its model (`build`), how many targets a
batch carries (the weight of its mean loss), what training and evaluation accumulate and
finish into metrics, and what inference returns (labels, tags, samples).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.data.examples import Prepared, Splits
from shared.data.tokenization import Tokenizer
from shared.protocol import IGNORE_INDEX
from shared.registry import InferenceInputError, TaskInfo, task_info
from shared.spec import DataSpec, ModelSpec
from shared.zoo.encoders import pad_right

__all__ = ["INFERENCE_BATCH", "Evaluation", "InferenceInputError", "Task", "pad_batch"]

# Texts a prediction request runs through the model at once.
INFERENCE_BATCH = 64


def pad_batch(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, T), lengths (B,): the model's inputs."""
    return pad_right(sequences), torch.tensor([len(s) for s in sequences], dtype=torch.long)


class Evaluation:
    """Sums over one evaluation's batches; `finish` turns the (all-reduced) sums into the
    task's metrics beside the loss. Every rank must return the same keys from `sums`."""

    def add(
        self,
        model: nn.Module,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        pass

    def sums(self) -> dict[str, float]:
        return {}

    def finish(self, loss: float, sums: dict[str, float]) -> dict[str, float]:
        return {}


class Task:
    """Defaults for a task whose targets are token ids with IGNORE_INDEX at unlabelled places."""

    name: str = ""
    # Evaluate each rank's share of the batches and all-reduce the sums (False: every rank
    # evaluates the whole set, for metrics that are not sums over batches).
    shard_evaluation: bool = True
    # Keys of `train_counts`, summed over an epoch's batches (the same on every rank).
    train_count_keys: tuple[str, ...] = ()

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

    def train_counts(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, int]:
        """What a training step adds to the epoch's `train_count_keys`."""
        return {}

    def train_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        """Epoch metrics from the summed train counts (`weight` is the targets' count)."""
        return {}

    def evaluation(self, labels: list[str]) -> Evaluation:
        return Evaluation()

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
