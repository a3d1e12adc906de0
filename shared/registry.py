"""The names a spec may use, each declared once and torch-free: the model types and the tasks.

A task's facts live here (what data it reads, which metric picks its best checkpoint, which
models it accepts, the size of its head); its behaviour (targets and loss, metrics, inference)
is the plug-in beside its head in `shared.zoo`, which `TaskInfo.plugin()` imports on demand,
so the API and the spec read task facts without importing torch.

Adding a task: a `TaskInfo` below and a plug-in module in `shared/zoo/`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from shared.spec import ModelSpec
    from shared.zoo.task import Task

# (model, encoder width, vocabulary size, label count) -> a number about the task's head.
HeadFormula = Callable[["ModelSpec", int, int, int], Any]

ModelType = Literal["rnn", "gru", "lstm", "bilstm", "transformer", "pretrained"]
MODEL_TYPES: tuple[str, ...] = get_args(ModelType)
RECURRENT_TYPES = ("rnn", "gru", "lstm", "bilstm")
# Trained from scratch, sized by the spec; "pretrained" is a base model from the registry
# (shared.hub), sized by its own config.
SCRATCH_TYPES = ("rnn", "gru", "lstm", "bilstm", "transformer")
# Gate blocks per recurrent cell: an LSTM's four (input, forget, cell, output), a GRU's three.
RECURRENT_GATES = {"rnn": 1, "gru": 3, "lstm": 4, "bilstm": 4}

TaskName = Literal["classification", "language_modeling", "tagging", "seq2seq"]


class InferenceInputError(ValueError):
    """A prediction request lacks what the task needs; `path` names the request's field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class TaskInfo:
    name: str
    summary: str
    # Upload formats the task can train on, and the built-in dataset it trains on by default.
    formats: tuple[str, ...]
    default_dataset: str
    # The validation metric that picks the best checkpoint and drives early stopping.
    selection_metric: str
    maximize: bool
    # The metric the jobs board shows beside the loss.
    board_metric: str
    # "module:Class" of the plug-in (imports torch).
    plugin_path: str
    # Every metric an evaluation reports (as val/<name>; a sweep's objective is one).
    metrics: tuple[str, ...] = ("loss",)
    # The head's exact parameter count, and the (floats, mask bytes) a token of a training
    # batch keeps in it for backward (shared.jobs.estimate).
    head_parameters: HeadFormula = lambda *_: 0
    head_activations: HeadFormula = lambda *_: (0.0, 0.0)
    # The inference route a trained job answers: POST /jobs/<id>/predict, /generate or
    # /translate.
    serves: Literal["predict", "generate", "translate"] = "predict"
    model_types: tuple[str, ...] = MODEL_TYPES
    # Tokenizer kinds the task can read (None: any).
    tokenizer_kinds: tuple[str, ...] | None = None
    # Why a model type outside `model_types` cannot do the task.
    model_type_reason: str = ""

    def better(self, value: float, best: float | None) -> bool:
        """Whether `value` of the selection metric beats `best` (None: nothing yet)."""
        if best is None:
            return True
        return value > best if self.maximize else value < best

    def plugin(self) -> Task:
        module, _, name = self.plugin_path.partition(":")
        return getattr(importlib.import_module(module), name)()


def _pooled_head(model: ModelSpec, width: int, vocab: int, labels: int) -> int:
    attention = width + 1 if model.pooling == "attention" and model.type != "transformer" else 0
    return attention + width * labels + labels


def _pooled_activations(model: ModelSpec, width: int, vocab: int, labels: int) -> tuple:
    # The states a pooling reads, and its products (a recurrent `last` reads one state).
    pools = model.type == "transformer" or model.pooling != "last"
    return (2 * width if pools else 0, 0)


def _tag_head(model: ModelSpec, width: int, vocab: int, tags: int) -> int:
    crf = tags * tags + 2 * tags if model.crf else 0
    return width * tags + tags + crf


def _tag_activations(model: ModelSpec, width: int, vocab: int, tags: int) -> tuple:
    return (2 * width + 3 * tags, width)  # states, dropout, emissions; the dropout's mask


def _vocabulary_head(model: ModelSpec, width: int, vocab: int, labels: int) -> int:
    return width * vocab + vocab


def _decoder_head(model: ModelSpec, width: int, vocab: int, labels: int) -> int:
    # A seq2seq model's "head" is its decoder (shared.sizes.seq2seq_decoder_parameters).
    from shared.sizes import seq2seq_decoder_parameters

    return seq2seq_decoder_parameters(model, width, vocab)


def _decoder_activations(model: ModelSpec, width: int, vocab: int, labels: int) -> tuple:
    # Per target token: the decoder's states (about as many as the encoder's per layer),
    # the logits over the target vocabulary, their log-softmax and their gradient.
    return (model.num_layers * (4 * width + 2 * model.dim_feedforward) + 3 * (vocab + 2), 0)


def _vocabulary_activations(model: ModelSpec, width: int, vocab: int, labels: int) -> tuple:
    # The states, the logits, their log-softmax and, in backward, the logits' gradient.
    return (width + 3 * vocab, 0)


TASKS: dict[str, TaskInfo] = {
    info.name: info
    for info in (
        TaskInfo(
            name="classification",
            summary="text -> label",
            formats=("tsv", "csv", "jsonl"),
            default_dataset="sentiment",
            selection_metric="accuracy",
            maximize=True,
            board_metric="accuracy",
            metrics=("loss", "accuracy"),
            plugin_path="shared.zoo.classifier:ClassificationTask",
            head_parameters=_pooled_head,
            head_activations=_pooled_activations,
        ),
        TaskInfo(
            name="language_modeling",
            summary="next token",
            formats=("text", "tsv", "csv", "jsonl"),
            default_dataset="stories",
            selection_metric="loss",
            maximize=False,
            board_metric="perplexity",
            metrics=("loss", "perplexity"),
            plugin_path="shared.zoo.lm:LanguageModelingTask",
            head_parameters=_vocabulary_head,
            head_activations=_vocabulary_activations,
            serves="generate",
            model_types=("rnn", "gru", "lstm", "transformer", "pretrained"),
            model_type_reason="a bidirectional model reads the tokens it must predict; use rnn, "
            "gru, lstm, transformer or a pretrained causal model for language_modeling",
        ),
        TaskInfo(
            name="tagging",
            summary="a tag per token, e.g. named entities",
            formats=("conll",),
            default_dataset="entities",
            selection_metric="f1",
            maximize=True,
            board_metric="f1",
            metrics=("loss", "f1", "precision", "recall", "accuracy"),
            plugin_path="shared.zoo.tagger:TaggingTask",
            head_parameters=_tag_head,
            head_activations=_tag_activations,
            tokenizer_kinds=("word",),
        ),
        TaskInfo(
            name="seq2seq",
            summary="text -> text, e.g. translation",
            formats=("tsv", "csv", "jsonl"),
            default_dataset="dates",
            selection_metric="bleu",
            maximize=True,
            board_metric="bleu",
            metrics=("loss", "perplexity", "bleu", "chrf"),
            plugin_path="shared.zoo.seq2seq:Seq2SeqTask",
            head_parameters=_decoder_head,
            head_activations=_decoder_activations,
            serves="translate",
            model_types=("rnn", "gru", "lstm", "bilstm", "transformer"),
            model_type_reason="seq2seq trains its encoder-decoder from scratch: use rnn, gru, "
            "lstm, bilstm (attention decoders) or transformer",
            tokenizer_kinds=("word", "char", "bpe", "wordpiece"),
        ),
    )
}
TASK_NAMES: tuple[str, ...] = get_args(TaskName)
assert set(TASK_NAMES) == set(TASKS), "every TaskName has a TaskInfo"


def task_info(name: str) -> TaskInfo:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}") from None


def tasks_serving(route: str) -> tuple[str, ...]:
    """The tasks whose trained jobs answer `route` ("predict" or "generate")."""
    return tuple(name for name, info in TASKS.items() if info.serves == route)


def describe_tasks() -> str:
    return ", ".join(f"{t.name} ({t.summary})" for t in TASKS.values())


__all__: list[Any] = [
    "MODEL_TYPES",
    "TASKS",
    "TASK_NAMES",
    "ModelType",
    "TaskInfo",
    "TaskName",
    "task_info",
]
