"""Evaluation reports: the numbers against independent computations on small hand-made cases
(shared.zoo.report), a plug-in's report against the model itself, and end to end through a
real worker: a finished job's GET /report for each task, 404s, user text kept as-is."""

import math

import pytest
import torch
import torch.nn.functional as F

from shared import jobs
from shared.data.examples import StreamExamples
from shared.registry import task_info
from shared.spec import ModelSpec
from shared.zoo import build_model
from shared.zoo import report as rep
from shared.zoo.task import ReportSplit
from tests.helpers import SMALL_TSV, tiny_spec, upload
from tests.test_ddp_service import spec as ddp_spec
from tests.test_e2e import TERMINAL, submit, wait_for_status
from tests.test_recovery import Workers

# ---------------------------------------------------------------- the numbers, by hand

LABELS = ["a", "b", "c"]
GOLD = [0, 0, 1, 1, 2, 2, 0]
PROBABILITIES = [
    [0.7, 0.2, 0.1],  # a -> a, 0.7
    [0.3, 0.6, 0.1],  # a -> b, 0.6 (wrong)
    [0.1, 0.85, 0.05],  # b -> b, 0.85
    [0.5, 0.45, 0.05],  # b -> a, 0.5 (wrong)
    [0.2, 0.2, 0.6],  # c -> c, 0.6
    [0.05, 0.9, 0.05],  # c -> b, 0.9 (wrong)
    [0.95, 0.03, 0.02],  # a -> a, 0.95
]
TEXTS = ["t0", "t1", "t2", "<script>alert(1)</script>", "t4", "t5", "t6"]


def test_classification_numbers_match_a_hand_computation():
    section = rep.classification_section(LABELS, GOLD, PROBABILITIES, TEXTS)
    assert section["examples"] == 7 and section["labels"] == LABELS
    assert section["accuracy"] == pytest.approx(4 / 7)
    assert section["confusion"]["counts"] == [[2, 1, 0], [1, 1, 0], [0, 1, 1]]
    assert section["confusion"]["normalized"] == [
        pytest.approx([2 / 3, 1 / 3, 0]),
        pytest.approx([0.5, 0.5, 0]),
        pytest.approx([0, 0.5, 0.5]),
    ]
    # a: 2 of 3 predicted a are a, 2 of 3 a found; b: 1 of 3, 1 of 2; c: 1 of 1, 1 of 2.
    expected = {
        "a": (2 / 3, 2 / 3, 2 / 3, 3),
        "b": (1 / 3, 1 / 2, 0.4, 2),
        "c": (1.0, 0.5, 2 / 3, 2),
    }
    for row in section["per_class"]:
        precision, recall, f1, support = expected[row["label"]]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
            (precision, recall, f1)
        )
        assert row["support"] == support
    assert section["macro"]["f1"] == pytest.approx((2 / 3 + 0.4 + 2 / 3) / 3)
    assert section["macro"]["precision"] == pytest.approx((2 / 3 + 1 / 3 + 1) / 3)
    assert section["weighted"]["f1"] == pytest.approx((3 * 2 / 3 + 2 * 0.4 + 2 * 2 / 3) / 7)
    assert section["weighted"]["recall"] == pytest.approx(4 / 7)  # weighted recall = accuracy
    # The most confident mistakes first; user text as given.
    assert [(m["text"], m["label"], m["prediction"]) for m in section["mistakes"]] == [
        ("t5", "c", "b"),
        ("t1", "a", "b"),
        ("<script>alert(1)</script>", "b", "a"),
    ]
    assert [m["probability"] for m in section["mistakes"]] == [0.9, 0.6, 0.5]


def test_expected_calibration_error_matches_an_independent_loop():
    section = rep.classification_section(LABELS, GOLD, PROBABILITIES, TEXTS)
    calibration = section["calibration"]
    # Bins: 0.5 wrong | 0.6 wrong, 0.6 right | 0.7 right | 0.85 right | 0.9 wrong, 0.95 right.
    by_hand = (0.5 * 1 + 0.1 * 2 + 0.3 * 1 + 0.15 * 1 + abs(0.5 - 0.925) * 2) / 7
    assert calibration["ece"] == pytest.approx(by_hand)
    top = [max(row) for row in PROBABILITIES]
    right = [row.index(max(row)) == g for row, g in zip(PROBABILITIES, GOLD, strict=True)]
    ece = 0.0
    for b in range(10):
        members = [
            i for i, p in enumerate(top) if b / 10 <= p < (b + 1) / 10 or (b == 9 and p == 1)
        ]
        if members:
            confidence = sum(top[i] for i in members) / len(members)
            accuracy = sum(right[i] for i in members) / len(members)
            ece += abs(accuracy - confidence) * len(members) / len(top)
    assert calibration["ece"] == pytest.approx(ece)
    bins = calibration["bins"]
    assert len(bins) == 10 and [b["count"] for b in bins] == [0, 0, 0, 0, 0, 1, 2, 1, 1, 2]
    assert bins[0] == {"lower": 0.0, "upper": 0.1, "count": 0, "confidence": None, "accuracy": None}
    assert bins[9]["confidence"] == pytest.approx(0.925) and bins[9]["accuracy"] == 0.5


def test_a_label_never_true_nor_predicted_scores_zero():
    counts = rep.confusion_counts([0, 0], [0, 0], 2)
    assert counts == [[2, 0], [0, 0]] and rep.row_normalized(counts)[1] == [0.0, 0.0]
    (_, empty) = rep.per_class(counts, ["x", "y"])
    assert empty == {"label": "y", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


GOLD_TAGS = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"], ["O", "B-LOC", "I-LOC"]]
PREDICTED_TAGS = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "I-PER"], ["O", "B-LOC", "O"]]
WORDS = [["Ada", "Lovelace", "in", "Oslo"], ["ACME", "hired", "Bob"], ["to", "New", "York"]]
TAGS = ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-PER", "O"]


def test_entity_scores_the_conll_way_by_hand():
    section = rep.tagging_section(TAGS, GOLD_TAGS, PREDICTED_TAGS, WORDS)
    assert section["examples"] == 3 and section["token_accuracy"] == pytest.approx(7 / 10)
    # Gold: PER x2, LOC x2, ORG x1; predicted: PER x2 (an I-PER after O starts one, as in
    # conlleval, and matches), ORG x2, LOC x1 (New only: a wrong span); found: PER 2, ORG 1.
    per_type = {row["type"]: row for row in section["entities"]["per_type"]}
    assert sorted(per_type) == ["LOC", "ORG", "PER"]
    assert (per_type["PER"]["f1"], per_type["PER"]["support"]) == (1.0, 2)
    assert per_type["ORG"]["precision"] == 0.5 and per_type["ORG"]["recall"] == 1.0
    assert per_type["ORG"]["f1"] == pytest.approx(2 / 3) and per_type["ORG"]["support"] == 1
    assert per_type["LOC"]["f1"] == 0.0 and per_type["LOC"]["support"] == 2
    assert section["entities"]["micro"] == pytest.approx(
        {"precision": 0.6, "recall": 0.6, "f1": 0.6}
    )
    assert section["entities"]["macro"]["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    confusion = section["tag_confusion"]
    assert confusion["labels"] == TAGS and sum(map(sum, confusion["counts"])) == 10
    index = TAGS.index
    assert confusion["counts"][index("B-LOC")][index("B-ORG")] == 1
    assert confusion["counts"][index("B-PER")][index("I-PER")] == 1
    assert confusion["counts"][index("I-LOC")][index("O")] == 1
    assert confusion["counts"][index("O")][index("O")] == 3
    assert [(m["type"], m["start"], m["end"], m["text"]) for m in section["missed"]] == [
        ("LOC", 3, 4, "Oslo"),
        ("LOC", 1, 3, "New York"),
    ]
    assert [(m["type"], m["text"]) for m in section["spurious"]] == [
        ("ORG", "Oslo"),
        ("LOC", "New"),
    ]
    assert section["missed"][0]["tokens"] == WORDS[0]


def test_loss_by_position_buckets():
    rows = rep.loss_by_position([1.0, 2.0, 3.0, 4.0, 5.0], [1, 1, 1, 1, 2], buckets=2)
    assert rows == [{"start": 0, "end": 3, "loss": 2.0}, {"start": 3, "end": 5, "loss": 3.0}]
    wide = rep.loss_by_position([1.0] * 70, [1] * 70)
    assert len(wide) <= 32 and wide[0] == {"start": 0, "end": 3, "loss": 1.0}
    assert wide[-1]["end"] == 70


def test_translation_numbers_by_length_and_worst_pairs():
    sources = ["ein Hund", "eine sehr lange Zeile " * 3, "zwei Katzen", "<b>nichts</b>"]
    references = ["a dog", "a very long line " * 3, "two cats", "nothing"]
    hypotheses = ["a dog", "a long line " * 3, "two cats", "<b>everything</b>"]
    section = rep.translation_section(sources, references, hypotheses, beam_size=4)
    assert section["pairs"] == 4 and section["beam_size"] == 4
    # Independent: words counted by hand; the two-word sources fall in 1-10, the long one
    # (12 words) in 11-20.
    assert [(b["words"], b["pairs"]) for b in section["by_source_length"]] == [
        ("1-10", 3),
        ("11-20", 1),
    ]
    # The length ratio counts 13a tokens ("<b>everything</b>" is 8: < b > everything < / b >).
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokens = Tokenizer13a()
    hyp_len = sum(len(tokens(h).split()) for h in hypotheses)
    ref_len = sum(len(tokens(r).split()) for r in references)
    assert (hyp_len, ref_len) == (2 + 9 + 2 + 8, 2 + 12 + 2 + 1)
    assert section["length_ratio"] == pytest.approx(hyp_len / ref_len)
    # The worst pair first, texts kept exactly as written; a perfect pair scores chrF 100.
    assert section["worst"][0]["hypothesis"] == "<b>everything</b>"
    assert [w["chrf"] for w in section["worst"]] == sorted(w["chrf"] for w in section["worst"])
    assert section["worst"][-1]["chrf"] == pytest.approx(100.0)
    assert 0 < section["bleu"] < 100 and 0 < section["chrf"] < 100
    assert section["signatures"]["bleu"].startswith("nrefs:1|case:mixed")
    assert rep.translation_summary("test", section) == {
        "test/bleu": section["bleu"],
        "test/chrf": section["chrf"],
    }


def test_translation_report_agrees_with_served_translations():
    from shared.data.pairs import PairExamples, PairTokenizer
    from shared.data.tokenization import train_tokenizer
    from shared.spec import DecodingSpec
    from shared.zoo.seq2seq_models import build_seq2seq

    torch.manual_seed(0)
    texts = ["a dog runs", "two cats sleep", "a man reads a book", "the sun"]
    tok = train_tokenizer("char", texts, vocab_size=40)
    pair = PairTokenizer(tok, tok)
    model = build_seq2seq(
        ModelSpec(type="gru", embedding_dim=8, hidden_size=8), tok.vocab_size,
        pair.target_vocab_size, 16, 16, 0.0,
    ).eval()  # fmt: skip
    examples = PairExamples(
        [pair.encode(t, 16) for t in texts],
        [pair.encode_target(t, 16) for t in texts],
        texts,
        texts,
    )
    decoding = DecodingSpec(beam_size=2, max_length=6)
    split = ReportSplit("test", examples, [], torch.device("cpu"), batch_size=3, decoding=decoding)
    task = task_info("seq2seq").plugin()
    section = task.report(model, pair, [], split)
    served = task.translate(model, pair, texts, 2, decoding.length_penalty, 6)
    again = rep.translation_section(texts, texts, [a["translation"] for a in served], 2)
    assert section == again


def test_language_model_report_matches_the_model_window_by_window():
    torch.manual_seed(0)
    context, vocab = 8, 12
    spec = ModelSpec(type="gru", embedding_dim=8, hidden_size=8)
    model = build_model(spec, "language_modeling", vocab, 2, context).eval()
    stream = torch.randint(2, vocab, (80,))
    examples = StreamExamples(stream, context)
    split = ReportSplit("validation", examples, [], torch.device("cpu"), batch_size=3)
    section = task_info("language_modeling").plugin().report(model, None, [], split)  # type: ignore[arg-type]
    starts = list(range(0, len(stream) - 1 - context + 1, context))
    sums, count = [0.0] * context, 0
    with torch.no_grad():
        for start in starts:
            window = stream[start : start + context + 1]
            logits, _ = model(window[None, :-1], torch.tensor([context]))
            losses = F.cross_entropy(logits[0], window[1:], reduction="none")
            for position in range(context):
                sums[position] += float(losses[position])
            count += context
    assert section["windows"] == len(starts) and "samples" not in section
    assert section["loss"] == pytest.approx(sum(sums) / count, rel=1e-5)
    assert section["perplexity"] == pytest.approx(math.exp(section["loss"]))
    assert [row["start"] for row in section["loss_by_position"]] == list(range(context))
    for row in section["loss_by_position"]:
        assert row["loss"] == pytest.approx(sums[row["start"]] / len(starts), rel=1e-5)


# ---------------------------------------------------------------- through the service


def finished(client, settings, **sections):
    job_id = submit(client, settings, **sections)
    job = wait_for_status(client, job_id, TERMINAL, timeout=180)
    assert job["status"] == "succeeded", job["error"]
    response = client.get(f"/api/v1/jobs/{job_id}/report")
    assert response.status_code == 200, response.json
    assert response.json["job_id"] == job_id and response.json["attempt"] == 1
    body = response.json["report"]
    checkpoint = client.get(f"/api/v1/jobs/{job_id}/checkpoints").json["checkpoints"]
    assert body["checkpoint"]["id"] == response.json["checkpoint_id"]
    assert body["checkpoint"]["id"] in {c["id"] for c in checkpoint}
    return job, body


@pytest.mark.e2e
def test_classification_report_with_a_test_split(client, settings, worker):
    script = "<script>alert(1)</script> great film number 1"
    validation = SMALL_TSV + f"{script}\tneg\n".encode()
    train = upload(
        client,
        SMALL_TSV,
        name="r-train",
        format="tsv",
        text_column="sentence",
        label_column="label",
    )
    val = upload(
        client, validation, name="r-val", format="tsv", text_column="sentence", label_column="label"
    )
    job, body = finished(
        client,
        settings,
        training={"epochs": 6, "lr": 0.02},
        data={
            "dataset": train.json["reference"],
            "validation_dataset": val.json["reference"],
            "test_dataset": train.json["reference"],
            "tokenizer": {"kind": "word", "vocab_size": 120},
        },
    )
    assert body["task"] == "classification" and set(body["splits"]) == {"validation", "test"}
    section = body["splits"]["validation"]
    assert section["examples"] == 81 and section["labels"] == ["neg", "pos"]
    assert sum(map(sum, section["confusion"]["counts"])) == 81
    assert sum(row["support"] for row in section["per_class"]) == 81
    assert section["accuracy"] == pytest.approx(job["latest_metrics"]["val/accuracy"]["value"])
    assert section["accuracy"] > 0.9 and 0 <= section["calibration"]["ece"] <= 1
    assert sum(b["count"] for b in section["calibration"]["bins"]) == 81
    # The mislabelled line is the most confident mistake, its text stored as it came.
    assert section["mistakes"][0]["text"] == script and section["mistakes"][0]["label"] == "neg"
    assert body["splits"]["test"]["examples"] == 80
    assert body["summary"]["validation/accuracy"] == section["accuracy"]
    assert {"validation/macro_f1", "validation/ece", "test/accuracy"} <= set(body["summary"])


@pytest.mark.e2e
def test_tagging_report(client, settings, worker):
    _, body = finished(
        client,
        settings,
        task="tagging",
        data={"dataset": "builtin:entities", "tokenizer": {"lowercase": False}},
        model={"type": "bilstm", "crf": True, "embedding_dim": 32, "hidden_size": 32},
        training={"epochs": 3, "lr": 0.02, "batch_size": 16},
    )
    section = body["splits"]["validation"]
    assert body["task"] == "tagging" and set(body["splits"]) == {"validation"}
    assert section["examples"] == 120  # 600 sentences, 20% held out
    assert {row["type"] for row in section["entities"]["per_type"]} >= {"PER", "LOC", "ORG"}
    assert 0 < section["entities"]["micro"]["f1"] <= 1 and 0 < section["token_accuracy"] <= 1
    assert len(section["tag_confusion"]["counts"]) == len(section["tags"])
    for example in section["missed"] + section["spurious"]:
        assert example["text"] == " ".join(example["tokens"][example["start"] : example["end"]])
    assert body["summary"]["validation/entity_f1"] == section["entities"]["micro"]["f1"]


@pytest.mark.e2e
def test_language_model_report(client, settings, worker):
    _, body = finished(
        client,
        settings,
        task="language_modeling",
        data={"dataset": "builtin:stories", "max_length": 32, "tokenizer": {"kind": "char"}},
        model={"type": "gru", "embedding_dim": 32, "hidden_size": 32},
        training={"epochs": 1, "max_steps": 30, "lr": 0.01},
    )
    section = body["splits"]["validation"]
    assert body["task"] == "language_modeling" and section["windows"] > 0
    assert section["perplexity"] == pytest.approx(math.exp(section["loss"]))
    positions = section["loss_by_position"]
    assert len(positions) == 32 and positions[0]["start"] == 0 and positions[-1]["end"] == 32
    # Later positions see more context: a trained model's loss falls along the window.
    assert positions[-1]["loss"] < positions[0]["loss"]
    assert [s["temperature"] for s in section["samples"]] == [0.5, 1.0, 1.5]
    assert all(len(s["text"]) == 100 and s["prompt"] for s in section["samples"])


# ---------------------------------------------------------------- 404s and ownership


def test_no_report_while_queued_or_running_and_none_for_others(app, client, db, accounts):
    job_id = client.post("/api/v1/jobs", json=tiny_spec()).json["id"]  # no worker on its queue
    queued = client.get(f"/api/v1/jobs/{job_id}/report")
    assert queued.status_code == 404 and queued.json["error"]["code"] == "not_found"
    assert queued.json["error"]["message"] == f"job {job_id} has no report: it is queued"
    attempt = jobs.claim(db, job_id, "pytest", 60)
    assert attempt == 1
    running = client.get(f"/api/v1/jobs/{job_id}/report")
    assert running.status_code == 404 and running.json["error"]["message"].endswith("it is running")

    body = {
        "task": "classification",
        "splits": {"validation": {"mistakes": [{"text": "<b>x</b>"}]}},
    }
    jobs.save_report(db, job_id, attempt, None, body)
    mine = client.get(f"/api/v1/jobs/{job_id}/report")
    assert mine.status_code == 200 and mine.json["report"] == body
    bob = app.test_client().get(f"/api/v1/jobs/{job_id}/report", headers=accounts["bob"].headers)
    assert bob.status_code == 403 and bob.json["error"]["code"] == "forbidden"  # as every job route
    root = app.test_client().get(f"/api/v1/jobs/{job_id}/report", headers=accounts["root"].headers)
    assert root.status_code == 200 and root.json["report"] == body
    assert app.test_client().get(f"/api/v1/jobs/{job_id}/report").status_code == 401
    # A zombie attempt cannot replace it.
    with pytest.raises(jobs.Fenced):
        jobs.save_report(db, job_id, attempt + 1, None, {"task": "other"})


@pytest.fixture
def two_rank_worker(settings, db, tmp_path, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("runs once, on SQLite: the report path does not depend on the database")
    pool = Workers(settings, tmp_path)
    pool.start("report-ddp", SEQTRAIN_WORKER_DEVICES="2", SEQTRAIN_TORCH_THREADS="1")
    yield pool
    pool.close()


@pytest.mark.e2e
def test_a_two_rank_job_reports_once_from_rank_zero(client, settings, two_rank_worker):
    created = client.post("/api/v1/jobs", json=ddp_spec(two_rank_worker.queue))
    assert created.status_code == 201, created.json
    job = wait_for_status(client, created.json["id"], TERMINAL, timeout=180)
    assert job["status"] == "succeeded", job["error"]
    response = client.get(f"/api/v1/jobs/{job['id']}/report")
    assert response.status_code == 200, response.json
    section = response.json["report"]["splits"]["validation"]
    assert sum(map(sum, section["confusion"]["counts"])) == section["examples"] == 160


def test_a_report_that_fails_is_noted_and_never_raised(client, db, store, settings, capsys):
    from shared.infra.cache import cache_for
    from shared.spec import parse_spec
    from worker.evaluation import write_report
    from worker.loop import train
    from worker.reporting import Reporter

    job_id = client.post("/api/v1/jobs", json=tiny_spec()).json["id"]
    attempt = jobs.claim(db, job_id, "pytest", 60)
    assert attempt == 1
    # Trained here without saving checkpoints: the job has no best checkpoint to report on.
    result = train(
        parse_spec(tiny_spec(training={"epochs": 1})), Reporter(lambda *a: None, lambda *a: None)
    )
    write_report(db, store, cache_for(settings), job_id, attempt, result, None)  # type: ignore[arg-type]
    assert "report: failed: ValueError: the job has no checkpoint" in capsys.readouterr().out
    notes = [event.message for event in jobs.job_events(db, job_id)]
    assert "report: failed: ValueError: the job has no checkpoint" in notes
    assert jobs.get_report(db, job_id) is None
