"""Language model: encoder states -> next-token logits; sampling with temperature and top-k;
the language-modelling task's plug-in (loss in nats per token, perplexity). A pretrained
causal model (shared.zoo.pretrained) brings its own output layer and the same contract."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.data.examples import prepare_language_modeling
from shared.data.tokenization import Tokenizer
from shared.protocol import IGNORE_INDEX
from shared.spec import ModelSpec
from shared.zoo import report
from shared.zoo.encoders import build_encoder
from shared.zoo.task import Evaluation, ReportSplit, Task

IGNORE = IGNORE_INDEX
# The report's samples: one per temperature, each this many tokens after a prompt of the
# validation text's first PROMPT_TOKENS tokens.
SAMPLE_TEMPERATURES = (0.5, 1.0, 1.5)
SAMPLE_TOKENS = 100
PROMPT_TOKENS = 8


class LanguageModel(nn.Module):
    def __init__(self, encoder: nn.Module, vocab_size: int, max_length: int) -> None:
        super().__init__()
        self.encoder, self.max_length = encoder, max_length
        width: int = encoder.width  # type: ignore[assignment]
        self.head = nn.Linear(width, vocab_size)

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        states, _, _ = self.encoder(tokens, lengths)
        logits = self.head(states)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        prompt: list[int],
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[int]:
        """Continue `prompt` by `length` sampled tokens (a sliding window of max_length)."""
        device = next(self.parameters()).device
        ids = list(prompt)
        for _ in range(length):
            window = torch.tensor([ids[-self.max_length :]], device=device)
            logits, _ = self(window, torch.tensor([window.size(1)], device=device))
            ids.append(sample_next(logits[0, -1], temperature, top_k, generator, banned=2))
        return ids[len(prompt) :]


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
    banned: int = 0,
) -> int:
    """One token drawn from next-token `logits` (V,) at `temperature`, among the `top_k` most
    likely, never one of the first `banned` ids (our <pad> and <unk>)."""
    logits = logits.float() / max(temperature, 1e-6)  # (V,)
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    logits[:banned] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class LanguageModelingTask(Task):
    name = "language_modeling"
    report_rows = False  # one token stream: no rows behind its windows

    prepare_examples = staticmethod(prepare_language_modeling)

    def build(
        self,
        model: ModelSpec,
        vocab_size: int,
        num_labels: int,
        max_length: int,
        backbone: Path | None = None,
    ) -> nn.Module:
        if model.type == "pretrained":
            from shared.zoo.pretrained import pretrained_language_model

            return pretrained_language_model(backbone, model)
        encoder = build_encoder(model, vocab_size, max_length, causal=True)
        return LanguageModel(encoder, vocab_size, max_length)

    def evaluation(self, labels: list[str]) -> Evaluation:
        return _Perplexity()

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
        """`prompt` continued by `length` sampled tokens (seeded: the same text each time)."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        ids = tokenizer.prompt_ids(prompt)
        new = model.generate(ids, length, temperature, top_k, generator)  # type: ignore[operator]
        text = tokenizer.decode(new)
        # Words are joined by spaces, so the continuation of a word-level prompt starts with one.
        if tokenizer.kind == "word" and prompt and not prompt[-1].isspace():
            text = " " + text
        return text

    @torch.no_grad()
    def report(
        self, model: nn.Module, tokenizer: Tokenizer, labels: list[str], split: ReportSplit
    ) -> dict[str, Any]:
        """Mean token loss by position in the context over the split's first `limit`
        windows, and (validation) seeded samples at a few temperatures."""
        starts = [s for batch in split.examples.batch_order(split.batch_size, None) for s in batch]
        starts = starts[: split.limit]
        sums: torch.Tensor | None = None  # (T,) loss summed over windows, per position
        counts: torch.Tensor | None = None
        for first in range(0, len(starts), split.batch_size):
            tokens, lengths, targets = (
                t.to(split.device)
                for t in split.examples.collate(starts[first : first + split.batch_size])
            )
            logits, _ = model(tokens, lengths)  # (B, T, V)
            loss = F.cross_entropy(
                logits.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none"
            )  # (B, T)
            batch_sums, batch_counts = loss.sum(0).double(), (targets != IGNORE).sum(0)
            sums = batch_sums if sums is None else sums + batch_sums
            counts = batch_counts if counts is None else counts + batch_counts
        assert sums is not None and counts is not None  # a stream has one window at least
        samples = self._samples(model, tokenizer, split) if split.samples else []
        return report.language_modeling_section(
            len(starts), sums.tolist(), counts.tolist(), samples
        )

    def _samples(
        self, model: nn.Module, tokenizer: Tokenizer, split: ReportSplit
    ) -> list[dict[str, Any]]:
        stream: torch.Tensor = split.examples.stream  # type: ignore[attr-defined]
        prompt = tokenizer.decode(stream[:PROMPT_TOKENS].tolist())
        return [
            {
                "temperature": temperature,
                "prompt": prompt,
                "text": self.generate(
                    model, tokenizer, prompt, SAMPLE_TOKENS, temperature, None, split.seed
                ),
            }
            for temperature in SAMPLE_TEMPERATURES
        ]

    def report_summary(self, split: str, section: dict[str, Any]) -> dict[str, float]:
        return report.language_modeling_summary(split, section)


class _Perplexity(Evaluation):
    def finish(self, loss: float, sums: dict[str, float]) -> dict[str, float]:
        return {"perplexity": math.exp(min(loss, 50.0))}
