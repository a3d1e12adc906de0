"""Serve a trained checkpoint: classify texts, tag tokens, generate text.

Imports torch: the API loads this lazily, so a process that serves no prediction never does.
`load_predictor(path, sha256)` is cached, so each checkpoint file is read once per process.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shared.data.tokenization import Tokenizer, tokenizer_from_dict
from shared.spec import JobSpec
from shared.zoo import build_model
from shared.zoo.checkpoints import load_checkpoint
from shared.zoo.encoders import pad_right

BATCH = 64


def _pad(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, T), lengths (B,): the model's inputs."""
    return pad_right(sequences), torch.tensor([len(s) for s in sequences], dtype=torch.long)


@dataclass
class Predictor:
    spec: JobSpec
    model: nn.Module
    tokenizer: Tokenizer
    labels: list[str]
    # One request at a time per model: torch modules are not re-entrant under threads.
    lock: threading.Lock

    @property
    def task(self) -> str:
        return self.spec.task

    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self.lock:
            for start in range(0, len(texts), BATCH):
                ids = [
                    self.tokenizer.encode(t, self.spec.data.max_length)
                    for t in texts[start : start + BATCH]
                ]
                probs = self.model.predict(*_pad(ids))  # type: ignore[operator]  # (B, C)
                for row in probs.tolist():
                    best = max(range(len(row)), key=row.__getitem__)
                    out.append(
                        {
                            "label": self.labels[best],
                            "probabilities": {
                                lab: round(p, 6) for lab, p in zip(self.labels, row, strict=True)
                            },
                        }
                    )
        return out

    def tag(self, sentences: list[list[str]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self.lock:
            for words in sentences:
                if not words:
                    out.append({"tokens": [], "tags": []})
                    continue
                pieces, index = self.tokenizer.encode_words(words)
                pieces, index = (
                    pieces[: self.spec.data.max_length],
                    index[: self.spec.data.max_length],
                )
                (path,) = self.model.predict(*_pad([pieces]))  # type: ignore[operator]
                tags = ["O"] * len(words)
                for position, word in enumerate(index):
                    if position == 0 or index[position - 1] != word:
                        tags[word] = self.labels[path[position]]
                out.append({"tokens": words, "tags": tags})
        return out

    def generate(
        self, prompt: str, length: int, temperature: float, top_k: int | None, seed: int | None
    ) -> str:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with self.lock:
            ids = self.tokenizer.encode(prompt) if prompt else [self.tokenizer.encode("\n")[0]]
            new = self.model.generate(ids, length, temperature, top_k, generator)  # type: ignore[operator]
        text = self.tokenizer.decode(new)
        # Words are joined by spaces, so the continuation of a word-level prompt starts with one.
        if self.tokenizer.kind == "word" and prompt and not prompt[-1].isspace():
            text = " " + text
        return text


@functools.lru_cache(maxsize=4)
def load_predictor(path: str, sha256: str) -> Predictor:
    """The model of a checkpoint file, in eval mode on the CPU (cached by path and content hash)."""
    del sha256  # part of the cache key: a replaced file is a new entry
    state = load_checkpoint(path)
    spec = JobSpec.model_validate(state["spec"])
    tokenizer = tokenizer_from_dict(state["tokenizer"])
    labels = list(state["labels"])
    model = build_model(
        spec.model, spec.task, tokenizer.vocab_size, max(len(labels), 2), spec.data.max_length
    )
    model.load_state_dict(state["model"])
    model.eval()
    return Predictor(spec, model, tokenizer, labels, threading.Lock())
