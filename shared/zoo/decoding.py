"""Batched greedy and beam-search decoding of a seq2seq model, through one incremental interface.

The interface (RecurrentSeq2Seq and TransformerSeq2Seq implement it; see IncrementalDecoder):

    bos_id, eos_id, max_target_length          the target ids and the longest translation
    encode(src (B, S), src_lengths (B,)) -> (memory, state)
        memory: what the decoder reads of the source, unchanged while decoding;
        state: the decoder's state before its first step
    step(tokens (N,), state, memory) -> (log_probs (N, V) float32, next state)
        feeds each row's previous token (BOS first) and scores the next one

Memory and state are dataclasses (or tuples, lists, tensors) whose tensors all have the batch
first, so `reorder(obj, index)` selects, repeats or permutes rows of either (a beam's
expansion, its survivors, finished sentences leaving the batch) without asking the model.

Both searches run a batch at once and drop finished sentences from it; neither ever emits PAD
or BOS. A sentence stops at EOS or after max_lengths[b] tokens (at most max_target_length).
Returned ids exclude BOS and EOS. Both run under torch.no_grad; call model.eval() first.

Beam search keeps the beam_size best live hypotheses by summed log-prob. Each step ranks the
2 * beam_size best continuations; those ending in EOS among the best beam_size end there, the
best beam_size others live on. Ended hypotheses score sum log p / ((5 + length) / 6) ** alpha,
length counting the EOS (GNMT). A sentence is done when it has beam_size ended hypotheses and
the worst of them scores at least what its best live hypothesis would, normalised at its
current length: exact without a length penalty (log-probs only fall), the usual heuristic
with one (Hugging Face's default), and what makes beam_size 1 exactly greedy. At the length
limit every live hypothesis ends with EOS.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import Any, Protocol

import torch

from shared.data.text import PAD_ID

NEVER = float("-inf")


class IncrementalDecoder(Protocol):
    bos_id: int
    eos_id: int
    max_target_length: int

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[Any, Any]: ...

    def step(self, tokens: torch.Tensor, state: Any, memory: Any) -> tuple[torch.Tensor, Any]: ...


def reorder(obj: Any, index: torch.Tensor) -> Any:
    """`obj` with every tensor's rows (dim 0) taken at `index`; other values are shared."""
    if isinstance(obj, torch.Tensor):
        return obj.index_select(0, index)
    if is_dataclass(obj) and not isinstance(obj, type):
        return replace(obj, **{f.name: reorder(getattr(obj, f.name), index) for f in fields(obj)})
    if isinstance(obj, list | tuple):
        return type(obj)(reorder(item, index) for item in obj)
    return obj


def gnmt_penalty(length: int, alpha: float) -> float:
    """GNMT's ((5 + length) / 6) ** alpha, `length` counting the EOS."""
    return ((5 + length) / 6) ** alpha


def _limits(model: IncrementalDecoder, max_lengths: torch.Tensor) -> list[int]:
    return [max(0, min(int(limit), model.max_target_length)) for limit in max_lengths.tolist()]


def _allowed(model: IncrementalDecoder, log_probs: torch.Tensor) -> torch.Tensor:
    """(N, V) log-probs with PAD and BOS ruled out: the model never learns to emit them."""
    log_probs = log_probs.clone()
    log_probs[:, [PAD_ID, model.bos_id]] = NEVER
    return log_probs


@torch.no_grad()
def greedy(
    model: IncrementalDecoder,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_lengths: torch.Tensor,
) -> list[list[int]]:
    """The most likely next token at each step, for each sentence of a (B, S) batch."""
    limits = _limits(model, max_lengths)
    outputs: list[list[int]] = [[] for _ in limits]
    memory, state = model.encode(src, src_lengths)
    live = [row for row, limit in enumerate(limits) if limit > 0]  # the sentence of each row
    index = torch.tensor(live, dtype=torch.long, device=src.device)
    memory, state = reorder(memory, index), reorder(state, index)
    tokens = torch.full((len(live),), model.bos_id, dtype=torch.long, device=src.device)
    while live:
        log_probs, state = model.step(tokens, state, memory)
        choices = _allowed(model, log_probs).argmax(dim=-1)  # (N,)
        keep = []
        for row, (sentence, token) in enumerate(zip(live, choices.tolist(), strict=True)):
            if token == model.eos_id:
                continue
            outputs[sentence].append(token)
            if len(outputs[sentence]) < limits[sentence]:
                keep.append(row)
        if len(keep) < len(live):
            index = torch.tensor(keep, dtype=torch.long, device=src.device)
            memory, state, choices = reorder(memory, index), reorder(state, index), choices[index]
            live = [live[row] for row in keep]
        tokens = choices
    return outputs


class _Ended:
    """One sentence's best ended hypotheses: (score, ids) best first, at most `size`."""

    def __init__(self, size: int, alpha: float) -> None:
        self.size, self.alpha = size, alpha
        self.hypotheses: list[tuple[float, list[int]]] = []

    def add(self, log_prob: float, ids: list[int]) -> None:
        score = log_prob / gnmt_penalty(len(ids) + 1, self.alpha)
        self.hypotheses.append((score, ids))
        self.hypotheses.sort(key=lambda hypothesis: -hypothesis[0])  # stable: earlier first
        del self.hypotheses[self.size :]

    def done(self, best_live: float, live_length: int) -> bool:
        if len(self.hypotheses) < self.size:
            return False
        return self.hypotheses[-1][0] >= best_live / gnmt_penalty(live_length, self.alpha)

    def best(self) -> tuple[list[int], float]:
        return (self.hypotheses[0][1], self.hypotheses[0][0]) if self.hypotheses else ([], NEVER)


@torch.no_grad()
def beam_search(
    model: IncrementalDecoder,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam_size: int,
    length_penalty: float,
    max_lengths: torch.Tensor,
) -> tuple[list[list[int]], list[float]]:
    """(the best hypothesis of each sentence of a (B, S) batch, its length-penalised score);
    `length_penalty` is GNMT's alpha (0: none)."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, not {beam_size}")
    limits, k, device = _limits(model, max_lengths), beam_size, src.device
    ended = [_Ended(k, length_penalty) for _ in limits]
    memory, state = model.encode(src, src_lengths)
    rows = torch.arange(len(limits), device=device).repeat_interleave(k)  # (B * k,)
    memory, state = reorder(memory, rows), reorder(state, rows)
    # A sentence's k beams start identical: only the first is live, or all would find the same.
    scores = torch.full((len(limits), k), NEVER, device=device)
    scores[:, 0] = 0.0
    beams = _Beams(
        scores, rows.new_full((rows.numel(),), model.bos_id), rows.new_empty(rows.numel(), 0)
    )
    live = list(range(len(limits)))  # the sentence of each block of k rows
    length = 0  # tokens in every live hypothesis
    while live:
        log_probs, state = model.step(beams.tokens, state, memory)
        at_limit = [limits[sentence] <= length for sentence in live]
        candidates = _candidates(model, log_probs, beams.scores, at_limit)  # (A, k * V)
        parents = beams.advance(candidates, model.eos_id, [ended[s] for s in live])
        state = reorder(state, parents)
        length += 1
        best_live = beams.scores[:, 0].tolist()
        keep = [
            block
            for block, sentence in enumerate(live)
            if not (at_limit[block] or ended[sentence].done(best_live[block], length))
        ]
        if len(keep) < len(live):
            blocks = torch.tensor(keep, dtype=torch.long, device=device)
            index = (blocks.unsqueeze(1) * k + torch.arange(k, device=device)).flatten()
            memory, state = reorder(memory, index), reorder(state, index)
            beams = beams.select(blocks, index)
            live = [live[block] for block in keep]
    best = [hypotheses.best() for hypotheses in ended]
    return [ids for ids, _ in best], [score for _, score in best]


def _candidates(
    model: IncrementalDecoder, log_probs: torch.Tensor, scores: torch.Tensor, at_limit: list[bool]
) -> torch.Tensor:
    """(A, k * V) summed log-probs of every continuation of each sentence's k beams; at the
    length limit, only EOS continues."""
    log_probs = _allowed(model, log_probs)  # (A * k, V)
    blocks, k = scores.shape
    if any(at_limit):
        limited = torch.tensor(at_limit, device=log_probs.device).repeat_interleave(k)  # (A * k,)
        not_eos = torch.ones(log_probs.size(1), dtype=torch.bool, device=log_probs.device)
        not_eos[model.eos_id] = False
        log_probs = log_probs.masked_fill(limited.unsqueeze(1) & not_eos, NEVER)
    return (scores.reshape(-1, 1) + log_probs).view(blocks, -1)


class _Beams:
    """The live hypotheses, k rows per sentence: summed log-probs (A, k), last tokens (A * k,),
    the ids so far (A * k, length)."""

    def __init__(self, scores: torch.Tensor, tokens: torch.Tensor, history: torch.Tensor) -> None:
        self.scores, self.tokens, self.history = scores, tokens, history

    def advance(self, candidates: torch.Tensor, eos_id: int, ended: list[_Ended]) -> torch.Tensor:
        """Keep each sentence's best k continuations that do not end, hand those that end at
        EOS among the best k to `ended`; returns the row each survivor came from (A * k,)."""
        blocks, k = self.scores.shape
        vocab = candidates.size(1) // k
        top_scores, top = candidates.topk(min(2 * k, candidates.size(1)), dim=1)  # (A, 2k)
        origin, token = top // vocab, top % vocab
        first_row = torch.arange(blocks, device=top.device).unsqueeze(1) * k  # (A, 1)
        ends = ((token[:, :k] == eos_id) & top_scores[:, :k].isfinite()).nonzero()  # (E, 2)
        if ends.numel():
            # One transfer for all of them: each .item() would wait on the device.
            rows = first_row[ends[:, 0], 0] + origin[ends[:, 0], ends[:, 1]]  # (E,)
            log_probs = top_scores[ends[:, 0], ends[:, 1]].tolist()
            histories = self.history[rows].tolist()
            for (block, _), log_prob, ids in zip(ends.tolist(), log_probs, histories, strict=True):
                ended[block].add(log_prob, ids)
        # A stable sort puts the non-EOS candidates first, best first: at most k of the 2k end
        # (one EOS per beam), so k always live on.
        order = torch.sort((token == eos_id).to(torch.uint8), dim=1, stable=True).indices[:, :k]
        parents = (first_row + origin.gather(1, order)).flatten()  # (A * k,)
        self.scores = top_scores.gather(1, order)  # (A, k)
        self.tokens = token.gather(1, order).flatten()
        self.history = torch.cat([self.history[parents], self.tokens.unsqueeze(1)], dim=1)
        return parents

    def select(self, blocks: torch.Tensor, rows: torch.Tensor) -> _Beams:
        return _Beams(self.scores[blocks], self.tokens[rows], self.history[rows])
