"""Serve a trained checkpoint through its task's plug-in: classify texts, tag tokens,
generate text, translate.

Imports torch: the API loads this lazily, so a process that serves no prediction never does.
`load_predictor(path, sha256)` is cached, so each checkpoint file is read once per process.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.data.tokenization import Tokenizer, tokenizer_from_dict
from shared.protocol import TrainerFailure
from shared.registry import task_info
from shared.spec import JobSpec
from shared.zoo.checkpoints import load_checkpoint, load_model_state
from shared.zoo.task import Task


@dataclass
class Predictor:
    """A checkpoint's model in eval mode, answering through its task's plug-in."""

    spec: JobSpec
    task: Task
    model: nn.Module
    tokenizer: Tokenizer
    labels: list[str]
    # One request at a time per model: torch modules are not re-entrant under threads.
    lock: threading.Lock

    def predict(
        self, texts: list[str] | None, tokens: list[list[str]] | None
    ) -> list[dict[str, Any]]:
        with self.lock, torch.no_grad():
            return self.task.predict(
                self.model, self.tokenizer, self.labels, self.spec.data.max_length, texts, tokens
            )

    def generate(
        self, prompt: str, length: int, temperature: float, top_k: int | None, seed: int | None
    ) -> str:
        with self.lock:
            return self.task.generate(
                self.model, self.tokenizer, prompt, length, temperature, top_k, seed
            )

    def translate(
        self,
        texts: list[str],
        beam_size: int | None = None,
        length_penalty: float | None = None,
        max_length: int | None = None,
    ) -> list[dict[str, Any]]:
        """{"translation", "score"} per text; a None setting is the spec's `decoding` one."""
        decoding, task = self.spec.decoding, self.task
        with self.lock, torch.no_grad():
            return task.translate(
                self.model,
                self.tokenizer,
                texts,
                decoding.beam_size if beam_size is None else beam_size,
                decoding.length_penalty if length_penalty is None else length_penalty,
                decoding.max_length if max_length is None else max_length,
            )


@functools.lru_cache(maxsize=4)
def load_predictor(path: str, sha256: str, backbone: str | None = None) -> Predictor:
    """The model of a checkpoint file, in eval mode on the CPU (cached by path and content
    hash); `backbone` is the unpacked base model a pretrained job was fine-tuned from."""
    del sha256  # part of the cache key: a replaced file is a new entry
    state = load_checkpoint(path)
    spec = JobSpec.model_validate(state["spec"])
    tokenizer = tokenizer_from_dict(state["tokenizer"])
    labels = list(state["labels"])
    base = Path(backbone) if backbone else None
    if state.get("base_model") != (base.name if base else None):
        raise TrainerFailure(f"{path} was fine-tuned from base model {state.get('base_model')}")
    task = task_info(spec.task).plugin()
    model = task.build_for(spec, *task.model_sizes(tokenizer, labels), backbone=base)
    load_model_state(model, state["model"])
    model.eval()
    return Predictor(spec, task, model, tokenizer, labels, threading.Lock())
