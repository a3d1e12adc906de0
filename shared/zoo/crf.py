"""Linear-chain CRF over per-token emissions, the output layer of a BiLSTM-CRF tagger.

Batch-first and masked: mask (B, T) is True on each sequence's real tokens, a prefix (right
padding), at least one per sequence. Padded positions never contribute, whatever their
emissions or tag values (-100, 0, ...) hold.

    crf = CRF(num_tags)
    loss = crf.neg_log_likelihood(emissions, tags, mask)  # emissions (B, T, K) from the encoder
    paths = crf.decode(emissions, mask)  # list[list[int]], one path per sequence, unpadded
"""

from __future__ import annotations

import torch
from torch import nn

REDUCTIONS = ("mean", "sum", "token_mean")


class CRF(nn.Module):
    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))  # [from, to]
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for parameter in (self.transitions, self.start_transitions, self.end_transitions):
            nn.init.uniform_(parameter, -0.1, 0.1)

    def log_likelihood(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """log p(tags | emissions) of each sequence: (B, T, K), (B, T) int64, (B, T) bool -> (B,)."""
        emissions, mask = self._prepare(emissions, mask)
        tags = tags.masked_fill(~mask, 0)  # any valid index: padded tags are never counted
        return self._path_score(emissions, tags, mask) - self._log_partition(emissions, mask)

    def neg_log_likelihood(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """The loss, a scalar: -log p summed, averaged over sequences ("mean") or over real
        tokens ("token_mean", so long and short batches weigh each token alike)."""
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
        total = -self.log_likelihood(emissions, tags, mask).sum()
        if reduction == "sum":
            return total
        if reduction == "mean":
            return total / emissions.size(0)
        return total / mask.sum()

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The most likely tag path of each sequence (Viterbi), as long as its real length."""
        emissions, mask = self._prepare(emissions, mask)
        transitions, start, end = self._transition_scores(emissions.dtype)
        num_tags = emissions.size(2)
        identity = torch.arange(num_tags, device=emissions.device).expand(emissions.size(0), -1)
        score = start + emissions[:, 0]  # (B, K): best score of a path ending in each tag
        backpointers = []  # T - 1 of (B, K): the best previous tag for each current tag
        for t in range(1, emissions.size(1)):
            # (B, K, 1) + (K, K) -> (B, K from, K to), best over `from`
            best, previous = (score.unsqueeze(2) + transitions).max(dim=1)  # (B, K) each
            real = mask[:, t].unsqueeze(1)  # (B, 1)
            score = torch.where(real, best + emissions[:, t], score)
            # On padding a tag points back to itself, so backtracking from the last column
            # carries each sequence's final tag unchanged down to its last real position.
            backpointers.append(torch.where(real, previous, identity))
        tag = (score + end).argmax(dim=1)  # (B,): the best final tag
        path = [tag]
        for previous in reversed(backpointers):
            tag = previous.gather(1, tag.unsqueeze(1)).squeeze(1)  # (B,)
            path.append(tag)
        rows = torch.stack(path[::-1], dim=1).tolist()  # (B, T), one transfer to the host
        lengths = mask.sum(dim=1).tolist()
        return [row[:length] for row, length in zip(rows, lengths, strict=True)]

    def _prepare(
        self, emissions: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if emissions.dim() != 3 or emissions.size(2) != self.num_tags:
            raise ValueError(
                f"emissions must be (B, T, {self.num_tags}), got {tuple(emissions.shape)}"
            )
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask must be {tuple(emissions.shape[:2])}, got {tuple(mask.shape)}")
        mask = mask.bool()
        # Sums of many terms lose too much in bf16/fp16 (under autocast too): at least float32.
        dtype = torch.promote_types(emissions.dtype, torch.float32)
        # Zeroing padding keeps inf/NaN there out of the result and out of the gradients.
        return emissions.to(dtype).masked_fill(~mask.unsqueeze(2), 0.0), mask

    def _transition_scores(
        self, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # A module cast to bf16 still scores in float32 or better.
        return (
            self.transitions.to(dtype),
            self.start_transitions.to(dtype),
            self.end_transitions.to(dtype),
        )

    def _path_score(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Unnormalised score of each given path: (B, T, K), (B, T), (B, T) -> (B,)."""
        transitions, start, end = self._transition_scores(emissions.dtype)
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        moved = transitions[tags[:, :-1], tags[:, 1:]]  # (B, T - 1): tag t-1 -> tag t
        last = tags.gather(1, mask.sum(dim=1, keepdim=True) - 1).squeeze(1)  # (B,)
        # where, not multiply by the mask, so nothing at padding can make a NaN.
        score = torch.where(mask, emitted, 0.0).sum(dim=1)
        score = score + torch.where(mask[:, 1:], moved, 0.0).sum(dim=1)
        return score + start[tags[:, 0]] + end[last]

    def _log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z, the forward algorithm over all K^T paths: (B, T, K), (B, T) -> (B,)."""
        transitions, start, end = self._transition_scores(emissions.dtype)
        alpha = start + emissions[:, 0]  # (B, K): log-sum of paths ending in each tag
        for t in range(1, emissions.size(1)):
            # (B, K from, 1) + (K, K) + (B, 1, K to) -> logsumexp over `from` -> (B, K)
            step = alpha.unsqueeze(2) + transitions + emissions[:, t].unsqueeze(1)
            alpha = torch.where(mask[:, t].unsqueeze(1), torch.logsumexp(step, dim=1), alpha)
        return torch.logsumexp(alpha + end, dim=1)
