"""Attention of one query over a source's states, for the recurrent seq2seq decoder.

AdditiveAttention        Bahdanau: score(q, k) = v^T tanh(W_q q + W_k k)
MultiplicativeAttention  Luong: `dot` score(q, k) = q . k (equal widths); `general` q^T W k

Call: `attention(query (B, Q), keys (B, S, K), padding (B, S) True at pads, prepared=None)
-> (context (B, K), weights (B, S))`. The part of the score that reads only the keys is
`prepare(keys)`: a decoder attends at every step, so it prepares once per source and passes
the result as `prepared`. Pads get exactly zero weight, so their key values never matter.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION_KINDS = ("additive", "dot", "general")


def _attend(
    scores: torch.Tensor, keys: torch.Tensor, padding: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (B, S), keys (B, S, K), padding (B, S)) -> (context (B, K), weights (B, S))."""
    # -inf before the softmax: exp gives an exact 0, not a small weight, at every pad.
    weights = torch.softmax(scores.masked_fill(padding, float("-inf")), dim=-1)  # (B, S)
    context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # (B, K)
    return context, weights


class AdditiveAttention(nn.Module):
    """Bahdanau attention; its hidden width is the query's width."""

    def __init__(self, query_width: int, key_width: int) -> None:
        super().__init__()
        self.query_projection = nn.Linear(query_width, query_width, bias=False)
        # One bias inside the tanh is enough; a second on the query side would add to it.
        self.key_projection = nn.Linear(key_width, query_width)
        self.score = nn.Linear(query_width, 1, bias=False)  # v

    def prepare(self, keys: torch.Tensor) -> torch.Tensor:
        return self.key_projection(keys)  # (B, S, A)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        padding: torch.Tensor,
        prepared: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.prepare(keys) if prepared is None else prepared  # (B, S, A)
        hidden = torch.tanh(projected + self.query_projection(query).unsqueeze(1))  # (B, S, A)
        return _attend(self.score(hidden).squeeze(-1), keys, padding)


class MultiplicativeAttention(nn.Module):
    """Luong attention: `dot` has no parameters; `general` maps the keys into the query's
    width (q^T W k = q . (W k), so W k is what `prepare` computes once)."""

    def __init__(self, mode: str, query_width: int, key_width: int) -> None:
        super().__init__()
        if mode not in ("dot", "general"):
            raise ValueError(f"unknown multiplicative attention {mode!r}; valid: dot, general")
        if mode == "dot" and query_width != key_width:
            raise ValueError(
                f"dot attention needs the query's width ({query_width}) to equal the keys' "
                f"({key_width}); use general or additive attention"
            )
        self.mode = mode
        self.key_projection = (
            nn.Linear(key_width, query_width, bias=False) if mode == "general" else None
        )

    def prepare(self, keys: torch.Tensor) -> torch.Tensor:
        return keys if self.key_projection is None else self.key_projection(keys)  # (B, S, Q)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        padding: torch.Tensor,
        prepared: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.prepare(keys) if prepared is None else prepared  # (B, S, Q)
        scores = torch.bmm(projected, query.unsqueeze(-1)).squeeze(-1)  # (B, S)
        return _attend(scores, keys, padding)


def build_attention(
    kind: str, query_width: int, key_width: int
) -> AdditiveAttention | MultiplicativeAttention:
    """The attention `kind` names (additive, dot or general)."""
    if kind == "additive":
        return AdditiveAttention(query_width, key_width)
    if kind in ("dot", "general"):
        return MultiplicativeAttention(kind, query_width, key_width)
    raise ValueError(f"unknown attention {kind!r}; valid: {', '.join(ATTENTION_KINDS)}")
