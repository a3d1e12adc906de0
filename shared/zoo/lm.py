"""Language model: encoder states -> next-token logits; sampling with temperature and top-k."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.protocol import IGNORE_INDEX

IGNORE = IGNORE_INDEX


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
            logits = logits[0, -1].float() / max(temperature, 1e-6)  # (V,)
            if top_k is not None and top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            logits[:2] = float("-inf")  # never <pad> or <unk>
            probs = torch.softmax(logits, dim=-1)
            ids.append(int(torch.multinomial(probs, 1, generator=generator)))
        return ids[len(prompt) :]
