"""The seq2seq task through the one training loop (no service): pairs, tokenizers per side
or shared, decoding at every validation, BLEU and chrF from sacrebleu, sample translations,
and the serving path agreeing with the evaluation."""

import math

import pytest
import torch

from shared.data.examples import Splits
from shared.data.formats import ParsedDataset
from shared.data.pairs import PairExamples, PairTokenizer, prepare_seq2seq
from shared.data.tokenization import tokenizer_from_dict
from shared.protocol import IGNORE_INDEX
from shared.spec import parse_spec
from shared.zoo.checkpoints import load_checkpoint
from shared.zoo.predictor import load_predictor
from shared.zoo.seq2seq import max_lengths
from tests.helpers import tiny_spec
from tests.test_trainer import Collect
from worker.trainer import Reporter, train

PAIRS = [
    {"source": "ein Hund läuft", "target": "a dog runs"},
    {"source": "eine Katze schläft", "target": "a cat sleeps"},
    {"source": "zwei Hunde laufen schnell", "target": "two dogs run fast"},
    {"source": "ein Mann liest", "target": "a man reads"},
]


def pair_spec(**sections):
    base = tiny_spec(
        task="seq2seq",
        data={"dataset": "builtin:dates", "max_length": 24, "tokenizer": {"kind": "char"}},
        model={"type": "gru", "embedding_dim": 32, "hidden_size": 64, "dropout": 0.0},
        training={"epochs": 6, "batch_size": 32, "lr": 0.01, "log_every_steps": 5},
        decoding={"beam_size": 2, "samples": 3},
    )
    for key, value in sections.items():
        base.setdefault(key, {}).update(value)
    return parse_spec(base)


def test_seq2seq_defaults_to_a_cased_bpe_tokenizer_and_refuses_seq2seq_fields_elsewhere():
    spec = parse_spec({"name": "t", "task": "seq2seq", "model": {"type": "transformer"}})
    assert (spec.data.tokenizer.kind, spec.data.tokenizer.lowercase) == ("bpe", False)
    again = parse_spec(spec.model_dump(mode="json"))  # a stored spec validates to itself
    assert again == spec
    with pytest.raises(ValueError, match="only task seq2seq"):
        parse_spec(tiny_spec(decoding={"beam_size": 2}))
    with pytest.raises(ValueError, match="share_embeddings needs data.tokenizer.shared"):
        parse_spec(
            {
                "name": "t",
                "task": "seq2seq",
                "data": {"tokenizer": {"shared": False}},
                "model": {"share_embeddings": True},
            }
        )
    with pytest.raises(ValueError, match="seq2seq trains its encoder-decoder from scratch"):
        parse_spec(
            {"name": "t", "task": "seq2seq", "model": {"type": "pretrained", "pretrained": "m"}}
        )


@pytest.mark.parametrize("shared", [True, False])
def test_pair_tokenizer_round_trips_and_frames_targets(shared):
    spec = pair_spec(data={"tokenizer": {"kind": "bpe", "vocab_size": 120, "shared": shared}})
    prepared = prepare_seq2seq(spec.data, 0, Splits(ParsedDataset("jsonl", PAIRS * 5, [])))
    tokenizer = prepared.tokenizer
    assert isinstance(tokenizer, PairTokenizer) and tokenizer.shared is shared
    again = tokenizer_from_dict(tokenizer.to_dict())
    assert isinstance(again, PairTokenizer) and again.shared is shared
    target = tokenizer.encode_target("a dog runs")
    assert target[0] == tokenizer.bos_id and target[-1] == tokenizer.eos_id
    assert again.encode_target("a dog runs") == target
    assert tokenizer.decode_target(target) == "a dog runs"  # BPE keeps case and spaces
    assert again.encode("ein Hund läuft") == tokenizer.encode("ein Hund läuft")
    assert tokenizer.target_vocab_size == tokenizer.target.vocab_size + 2


def test_pair_batches_pad_sources_with_pad_and_targets_with_ignore():
    spec = pair_spec()
    prepared = prepare_seq2seq(spec.data, 0, Splits(ParsedDataset("jsonl", PAIRS * 5, [])))
    examples = prepared.train
    assert isinstance(examples, PairExamples)
    batch = examples.batch_order(4, seed=1)[0]
    tokens, lengths, targets = examples.collate(batch)
    assert tokens.shape[0] == lengths.shape[0] == targets.shape[0] == len(batch)
    for row, index in enumerate(batch):
        n = len(examples.sources[index])
        assert lengths[row] == n and (tokens[row, n:] == 0).all()
        m = len(examples.targets[index])
        assert (targets[row, m:] == IGNORE_INDEX).all()
    assert examples.batch_order(4, seed=1) == examples.batch_order(4, seed=1)


def test_max_lengths_follow_the_source_unless_a_limit_is_given():
    lengths = torch.tensor([1, 5, 40])
    assert max_lengths(lengths, 64, None).tolist() == [12, 20, 64]
    assert max_lengths(lengths, 64, 7).tolist() == [7, 7, 7]
    assert max_lengths(lengths, 5, 7).tolist() == [5, 5, 5]


def test_a_seq2seq_model_learns_dates_and_serving_agrees_with_its_evaluation(tmp_path):
    torch.set_num_threads(1)
    spec = pair_spec()
    out = Collect(tmp_path)
    samples = []
    report = Reporter(
        lambda rows, epoch, step: out.rows.extend(rows),
        out.save,
        log_samples=lambda split, epoch, step, items: samples.append((split, epoch, items)),
    )
    result = train(spec, report)
    bleu = [r["value"] for r in out.rows if (r["split"], r["name"]) == ("val", "bleu")]
    assert len(bleu) == 6 and bleu[-1] > 60 and bleu[-1] > bleu[0]
    names = {(r["split"], r["name"]) for r in out.rows}
    assert {("val", "chrf"), ("val", "perplexity"), ("train", "perplexity")} <= names
    val_loss = result.metrics["val/loss"]
    assert result.metrics["val/perplexity"] == pytest.approx(math.exp(val_loss))
    # Samples: the same first pairs every epoch, with the sacrebleu signature.
    assert [epoch for _, epoch, _ in samples] == [1, 2, 3, 4, 5, 6]
    split, _, items = samples[-1]
    assert split == "validation" and len(items) == 3
    assert all(set(item) == {"source", "reference", "hypothesis", "signature"} for item in items)
    assert items[0]["signature"].startswith("nrefs:1|case:mixed")
    assert [i["source"] for i in samples[0][2]] == [i["source"] for i in items]

    # The last checkpoint, served, translates the validation sources to the same BLEU.
    from sacrebleu.metrics import BLEU

    path = out.saved[-1]
    predictor = load_predictor(str(path), "test-" + path.name)
    state = load_checkpoint(path)
    assert state["epoch"] == 6
    prepared = result.run.data
    sources, references = prepared.val.source_texts, prepared.val.references
    answers = predictor.task.translate(
        predictor.model, predictor.tokenizer, sources, 2, spec.decoding.length_penalty, None
    )
    served = BLEU().corpus_score([a["translation"] for a in answers], [references]).score
    assert served == pytest.approx(bleu[-1], abs=1e-6)
    assert all(isinstance(a["score"], float) and a["score"] <= 0 for a in answers)
