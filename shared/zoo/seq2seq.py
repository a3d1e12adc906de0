"""The seq2seq task's plug-in: text pairs (shared.data.pairs) -> an encoder-decoder
(shared.zoo.seq2seq_models: attention LSTMs / GRUs or a Transformer) trained with teacher
forcing; every validation decodes the split (shared.zoo.decoding, the spec's `decoding`
section) and scores it with sacrebleu's BLEU and chrF on detokenized text against the
references as written; serving translates (`POST /jobs/<id>/translate`); a finished job's
report translates validation and test again with the best checkpoint (shared.zoo.report).

Metrics: val/loss is the plain cross-entropy per target token, val/perplexity its
exponential; train/loss includes label smoothing when the spec asks for it (then no
train/perplexity is written); bleu and chrf are on a 0-100 scale.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.data.examples import Examples, Prepared
from shared.data.pairs import PairExamples, PairTokenizer, prepare_seq2seq
from shared.data.tokenization import Tokenizer
from shared.protocol import IGNORE_INDEX
from shared.spec import DecodingSpec, JobSpec, ModelSpec
from shared.zoo import report
from shared.zoo.decoding import beam_search
from shared.zoo.seq2seq_models import Seq2SeqModel, build_seq2seq
from shared.zoo.task import INFERENCE_BATCH, Evaluation, ReportSplit, Task, pad_batch

# A translation's default token budget: twice its source's tokens and this many more.
LENGTH_SLACK = 10


def max_lengths(
    source_lengths: torch.Tensor, max_target_length: int, limit: int | None
) -> torch.Tensor:
    """(B,) the most tokens each translation may have: `limit`, else twice its source's
    tokens plus LENGTH_SLACK; never past the model's `max_target_length`."""
    if limit is not None:
        return torch.full_like(source_lengths, min(limit, max_target_length))
    return (2 * source_lengths + LENGTH_SLACK).clamp(max=max_target_length)


def decode(
    model: Seq2SeqModel,
    source: torch.Tensor,
    source_lengths: torch.Tensor,
    decoding: DecodingSpec,
) -> tuple[list[list[int]], list[float]]:
    """Best target ids (no BOS / EOS) and their scores for a padded batch of sources."""
    limits = max_lengths(source_lengths, model.max_target_length, decoding.max_length)
    return beam_search(
        model, source, source_lengths, decoding.beam_size, decoding.length_penalty, limits
    )


def pair_tokenizer(tokenizer: Tokenizer) -> PairTokenizer:
    if not isinstance(tokenizer, PairTokenizer):
        raise TypeError(f"seq2seq needs a source/target tokenizer, not {tokenizer.kind}")
    return tokenizer


def as_seq2seq(model: nn.Module) -> Seq2SeqModel:
    if not isinstance(model, Seq2SeqModel):
        raise TypeError(f"seq2seq decodes with an encoder-decoder, not {type(model).__name__}")
    return model


class Seq2SeqTask(Task):
    name = "seq2seq"
    # BLEU and chrF are corpus scores, not sums over batches: every rank decodes the split.
    shard_evaluation = False
    report_rows = False

    prepare_examples = staticmethod(prepare_seq2seq)

    def model_sizes(self, tokenizer: Tokenizer, labels: list[str]) -> tuple[int, int]:
        """(source ids, target ids with BOS and EOS)."""
        pair = pair_tokenizer(tokenizer)
        return pair.vocab_size, pair.target_vocab_size

    def build_for(
        self, spec: JobSpec, vocab_size: int, num_labels: int, backbone: Path | None = None
    ) -> nn.Module:
        data = spec.data
        return build_seq2seq(
            spec.model,
            vocab_size,
            num_labels,
            data.max_source_length or data.max_length,
            data.max_target_length or data.max_length,
            spec.training.label_smoothing,
        )

    def build(
        self,
        model: ModelSpec,
        vocab_size: int,
        num_labels: int,
        max_length: int,
        backbone: Path | None = None,
    ) -> nn.Module:
        raise TypeError(
            "a seq2seq model reads the data and training sections too: build it with "
            "build_for(spec, *model_sizes(tokenizer, labels))"
        )

    def count_targets(self, targets: torch.Tensor) -> int:
        # The first column is BOS, the decoder's first input, never a label.
        return int((targets[:, 1:] != IGNORE_INDEX).sum())

    def interval_metrics(self, spec: JobSpec, loss: float) -> dict[str, float]:
        # A label-smoothed loss is no cross-entropy of the data: no perplexity from it.
        if spec.training.label_smoothing:
            return {}
        return {"perplexity": math.exp(min(loss, 50.0))}

    def evaluation_for(self, spec: JobSpec, data: Prepared, examples: Examples) -> Evaluation:
        assert isinstance(examples, PairExamples)
        return Translations(spec.decoding, pair_tokenizer(data.tokenizer), examples)

    @torch.no_grad()
    def translate(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        texts: list[str],
        beam_size: int,
        length_penalty: float,
        max_length: int | None,
    ) -> list[dict[str, Any]]:
        """Each text's translation and score (its log-probability over the length penalty),
        decoded in batches of similar length."""
        pair, seq2seq = pair_tokenizer(tokenizer), as_seq2seq(model)
        decoding = DecodingSpec(
            beam_size=beam_size, length_penalty=length_penalty, max_length=max_length
        )
        device = next(model.parameters()).device
        ids = [pair.encode(text, seq2seq.max_source_length) for text in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        answers: list[dict[str, Any]] = [{} for _ in texts]
        for start in range(0, len(order), INFERENCE_BATCH):
            chunk = order[start : start + INFERENCE_BATCH]
            source, lengths = pad_batch([ids[i] for i in chunk])
            hypotheses, scores = decode(seq2seq, source.to(device), lengths.to(device), decoding)
            for index, hypothesis, score in zip(chunk, hypotheses, scores, strict=True):
                answers[index] = {"translation": pair.decode_target(hypothesis), "score": score}
        return answers

    @torch.no_grad()
    def report(
        self, model: nn.Module, tokenizer: Tokenizer, labels: list[str], split: ReportSplit
    ) -> dict[str, Any]:
        """The split's first `limit` pairs translated with the spec's decoding and scored
        (shared.zoo.report.translation_section)."""
        pair, seq2seq = pair_tokenizer(tokenizer), as_seq2seq(model)
        examples = split.examples
        assert isinstance(examples, PairExamples)
        decoding = split.decoding or DecodingSpec()
        translated: dict[int, str] = {}
        for indices, (tokens, lengths, _) in split.batches():
            hypotheses, _ = decode(seq2seq, tokens, lengths, decoding)
            for index, hypothesis in zip(indices, hypotheses, strict=True):
                translated[index] = pair.decode_target(hypothesis)
        order = sorted(translated)
        return report.translation_section(
            [examples.source_texts[i] for i in order],
            [examples.references[i] for i in order],
            [translated[i] for i in order],
            decoding.beam_size,
        )

    def report_summary(self, split: str, section: dict[str, Any]) -> dict[str, float]:
        return report.translation_summary(split, section)


class Translations(Evaluation):
    """Decodes each batch; `finish` scores the split with sacrebleu (BLEU and chrF on the
    detokenized hypotheses against the references as written)."""

    def __init__(
        self, decoding: DecodingSpec, tokenizer: PairTokenizer, examples: PairExamples
    ) -> None:
        self.decoding, self.tokenizer, self.examples = decoding, tokenizer, examples
        self.hypotheses: dict[int, str] = {}
        self.signatures: dict[str, str] = {}

    def add(
        self,
        model: nn.Module,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
        indices: list[int],
    ) -> None:
        hypotheses, _ = decode(as_seq2seq(model), tokens, lengths, self.decoding)
        for index, hypothesis in zip(indices, hypotheses, strict=True):
            self.hypotheses[index] = self.tokenizer.decode_target(hypothesis)

    def finish(self, loss: float, sums: dict[str, float]) -> dict[str, float]:
        order = sorted(self.hypotheses)
        scores = report.corpus_scores(
            [self.hypotheses[i] for i in order], [self.examples.references[i] for i in order]
        )
        bleu_score, chrf_score = scores["bleu"], scores["chrf"]
        self.signatures = scores["signatures"]
        print(
            f"sacrebleu over {len(order)} pairs (beam {self.decoding.beam_size}): "
            f"BLEU {bleu_score:.2f} [{self.signatures['bleu']}], "
            f"chrF {chrf_score:.2f} [{self.signatures['chrf']}]",
            flush=True,
        )
        return {
            "perplexity": math.exp(min(loss, 50.0)),
            "bleu": bleu_score,
            "chrf": chrf_score,
        }

    def samples(self) -> list[dict[str, Any]]:
        """The first `decoding.samples` pairs of the split, the same ones each epoch."""
        kept = sorted(self.hypotheses)[: self.decoding.samples]
        return [
            {
                "source": self.examples.source_texts[i],
                "reference": self.examples.references[i],
                "hypothesis": self.hypotheses[i],
                "signature": self.signatures.get("bleu", ""),
            }
            for i in kept
        ]
