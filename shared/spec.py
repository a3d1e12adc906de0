"""The job spec: the single source of truth for validation, defaults and documentation.

A spec is JSON (or YAML through the CLI) with five nested sections. Every field has a
default (except `name`) and a description; unknown fields are rejected; model sizes are bounded so that a
spec asking for a model no worker could hold is a 422 at submit, not an OOM in a worker.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from shared.data.datasets import BUILTIN_DATASETS
from shared.modelspec import (
    PRINTABLE,
    SCRATCH_SIZE_FIELDS,
    LoraSpec,
    ModelSpec,
    _Section,
)
from shared.registry import TASKS, TaskName, describe_tasks
from shared.resourcespec import PRIORITY_NAMES, ResourcesSpec
from shared.sizes import estimate_parameters

__all__ = [
    "FINE_TUNING_DEFAULTS",
    "MAX_MODEL_PARAMETERS",
    "PRINTABLE",
    "SCRATCH_SIZE_FIELDS",
    "CheckpointSpec",
    "DataSpec",
    "DecodingSpec",
    "JobSpec",
    "LoraSpec",
    "ModelSpec",
    "PRIORITY_NAMES",
    "ResourcesSpec",
    "TokenizerSpec",
    "TrainingSpec",
    "dataset_references",
    "parse_spec",
]

# Upper bound on trainable parameters accepted at submit (about 400 MB of fp32 weights,
# 1.6 GB with AdamW state and gradients). Settings can lower it per deployment.
MAX_MODEL_PARAMETERS = 100_000_000


DATASET_REFERENCE = (
    "`builtin:<name>`, `dataset:<id>`, or the name of one of your uploads (its newest version). "
    "Built-in: " + ", ".join(f"builtin:{n}" for n in BUILTIN_DATASETS) + "."
)


class TokenizerSpec(_Section):
    kind: Literal["word", "char", "bpe", "wordpiece"] = Field(
        "word", description="word (whitespace and punctuation), char, or a trained bpe / wordpiece."
    )
    vocab_size: int = Field(
        20000, ge=3, le=1_000_000, description="Largest vocabulary, <pad> and <unk> included."
    )
    min_frequency: int = Field(
        1,
        ge=1,
        le=1_000_000,
        description="Rarer tokens (or merges) are left out of the vocabulary.",
    )
    lowercase: bool = Field(
        True, description="Lower-case text before tokenizing (seq2seq: false unless set)."
    )
    shared: bool = Field(
        True,
        description="seq2seq: one tokenizer for source and target, trained on both sides; "
        "false: one per side, each of at most vocab_size ids.",
    )


class DataSpec(_Section):
    dataset: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="Training data: " + DATASET_REFERENCE + " Null: the task's built-in dataset "
        "(builtin:sentiment, builtin:stories, builtin:entities, builtin:dates).",
    )
    validation_dataset: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="Explicit validation data (same forms); null: hold out val_fraction of the training data.",
    )
    test_dataset: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="Test data evaluated once after training (same forms); null: none.",
    )
    max_length: int = Field(
        128, ge=1, le=4096, description="Tokens kept per example (longer texts are truncated)."
    )
    max_source_length: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="seq2seq: source tokens kept per pair; null: max_length.",
    )
    max_target_length: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="seq2seq: target tokens kept per pair (and the longest translation); "
        "null: max_length.",
    )
    val_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=0.9,
        description="Fraction of the training rows held out for validation (seeded split) "
        "when validation_dataset is null.",
    )
    tokenizer: TokenizerSpec = Field(
        default_factory=TokenizerSpec,
        description="How text becomes token ids (trained on the training split).",
    )

    @field_validator("dataset", "validation_dataset", "test_dataset")
    @classmethod
    def _known_builtins(cls, reference: str | None) -> str | None:
        name = reference.removeprefix("builtin:") if reference else None
        if reference and reference.startswith("builtin:") and name not in BUILTIN_DATASETS:
            valid = ", ".join(f"builtin:{n}" for n in BUILTIN_DATASETS)
            raise ValueError(f"unknown built-in dataset {reference!r}; valid: {valid}")
        return reference


class TrainingSpec(_Section):
    epochs: int = Field(5, ge=1, le=10_000, description="Passes over the training split.")
    batch_size: int = Field(
        32, ge=1, le=8192, description="Examples per optimizer step (per device)."
    )
    lr: float = Field(2e-3, gt=0.0, le=10.0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0, description="AdamW decoupled weight decay.")
    grad_clip: float = Field(
        1.0, ge=0.0, le=1e6, description="Clip the global gradient norm to this value; 0 disables."
    )
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Seed for the split, initialization and shuffling."
    )
    log_every_steps: int = Field(
        10,
        ge=1,
        le=1_000_000,
        description="Write the training loss every this many optimizer steps.",
    )
    tensorboard: bool = Field(
        False,
        description="Also write every metric to TensorBoard event files, downloadable from "
        "GET /api/v1/jobs/<id>/tensorboard as a .tar.gz.",
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        le=100_000_000,
        description="Stop after this many optimizer steps; null: after `epochs`.",
    )
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine",
        description="Learning-rate decay after warmup (to 10% of lr for cosine and linear).",
    )
    warmup_steps: int | None = Field(
        None,
        ge=0,
        le=1_000_000,
        description="Linear warmup steps; null: warmup_ratio of all steps, or 5% of them, at most "
        "200, when that is null too.",
    )
    warmup_ratio: float | None = Field(
        None,
        ge=0.0,
        le=0.5,
        description="Warmup as a fraction of all steps, when warmup_steps is null (pretrained "
        "models: 0.06 unless set).",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="seq2seq: share of each target's probability spread over the vocabulary "
        "in the training loss (0.1 is usual); evaluation reports the plain loss.",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Stop after this many evaluations without improvement of the selection metric; null: never.",
    )
    deterministic: bool = Field(
        False, description="Deterministic kernels (bit-exact reruns and resumes; slower on GPUs)."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Autocast precision on CUDA (auto: bf16 where supported). CPUs train in fp32.",
    )


class CheckpointSpec(_Section):
    every_steps: int | None = Field(
        None,
        ge=1,
        le=100_000_000,
        description="Also save every this many optimizer steps; null: epochs only.",
    )
    every_epochs: int = Field(
        1, ge=1, le=10_000, description="Save a checkpoint every this many epochs (and at the end)."
    )
    keep_last: int = Field(
        3, ge=1, le=1000, description="Checkpoints kept per job; older ones are deleted."
    )


class DecodingSpec(_Section):
    beam_size: int = Field(
        4,
        ge=1,
        le=16,
        description="seq2seq: hypotheses kept while decoding validation, test and served "
        "translations (1: greedy).",
    )
    length_penalty: float = Field(
        0.6,
        ge=0.0,
        le=5.0,
        description="seq2seq: beam scores are divided by ((5 + length) / 6) ** length_penalty "
        "(0: the plain sum of log-probabilities, which favours short translations).",
    )
    max_length: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="seq2seq: most tokens a translation has; null: twice the source's plus "
        "10, at most data.max_target_length.",
    )
    samples: int = Field(
        5,
        ge=0,
        le=50,
        description="seq2seq: sample translations (source, reference, hypothesis) stored with "
        "each validation.",
    )


# The fields that only a seq2seq job may set, with the section that holds each.
SEQ2SEQ_FIELDS = {
    "model": ("attention", "share_embeddings", "tie_embeddings"),
    "data": ("max_source_length", "max_target_length"),
    "training": ("label_smoothing",),
}


class JobSpec(_Section):
    # The one required field: a job without a name cannot be told apart in a list.
    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="Human-readable job name (required).",
    )
    task: TaskName = Field("classification", description=describe_tasks() + ".")
    # data precedes model so that the model's size check can see the vocabulary bound.
    data: DataSpec = Field(default_factory=DataSpec, description="Dataset and preprocessing.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Architecture and sizes.")
    training: TrainingSpec = Field(
        default_factory=TrainingSpec, description="Optimization settings."
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Devices, queue, limits."
    )
    checkpoint: CheckpointSpec = Field(
        default_factory=CheckpointSpec, description="Checkpoint policy."
    )
    decoding: DecodingSpec = Field(
        default_factory=DecodingSpec,
        description="seq2seq: how translations are decoded (validation, test, serving).",
    )

    @field_validator("model")
    @classmethod
    def _model_fits(cls, model: ModelSpec, info: ValidationInfo) -> ModelSpec:
        data = info.data.get("data") or DataSpec()
        task = info.data.get("task", "classification")
        facts = TASKS[task]
        if model.type not in facts.model_types:
            raise ValueError(facts.model_type_reason)
        if model.type == "pretrained":  # sized by its config: checked against it at submit
            if data.tokenizer != TokenizerSpec():
                raise ValueError(
                    "data.tokenizer: a pretrained model uses its own tokenizer; leave that "
                    "section out"
                )
            return model
        kinds = facts.tokenizer_kinds
        if kinds is not None and data.tokenizer.kind not in kinds:
            raise ValueError(
                f"{task} reads pre-split tokens whole: use data.tokenizer.kind = {' or '.join(kinds)}"
            )
        params = estimate_parameters(model, data.tokenizer.vocab_size, 2, task)
        if params > MAX_MODEL_PARAMETERS:
            raise ValueError(
                f"model would have about {params:,} parameters with a {data.tokenizer.vocab_size:,}-token "
                f"vocabulary; the limit is {MAX_MODEL_PARAMETERS:,} (reduce hidden_size, num_layers, "
                "embedding_dim, dim_feedforward or data.tokenizer.vocab_size)"
            )
        return model

    @model_validator(mode="after")
    def _seq2seq(self) -> JobSpec:
        """Fields only seq2seq reads are refused elsewhere; seq2seq tokenizes with BPE and
        keeps case (BLEU scores the detokenized, cased text) unless the spec says otherwise."""
        if self.task != "seq2seq":
            given = [
                f"{section}.{name}"
                for section, names in SEQ2SEQ_FIELDS.items()
                for name in names
                if getattr(getattr(self, section), name)
                != type(getattr(self, section)).model_fields[name].default
            ]
            if not self.data.tokenizer.shared:
                given.append("data.tokenizer.shared")
            if self.decoding != DecodingSpec():
                given.append("decoding")
            if given:
                raise ValueError(f"{', '.join(given)}: only task seq2seq reads these")
            return self
        model, tokenizer = self.model, self.data.tokenizer
        if model.share_embeddings and not tokenizer.shared:
            raise ValueError("model.share_embeddings needs data.tokenizer.shared: true")
        recurrent = model.type != "transformer"
        if model.tie_embeddings and recurrent and model.embedding_dim != model.hidden_size:
            raise ValueError(
                f"model.tie_embeddings: the decoder's output ({model.hidden_size}, "
                f"hidden_size) must be as wide as its embeddings ({model.embedding_dim})"
            )
        defaults = {
            name: value
            for name, value in {"kind": "bpe", "lowercase": False}.items()
            if name not in tokenizer.model_fields_set
        }
        if not defaults:
            return self
        data = self.data.model_copy(update={"tokenizer": tokenizer.model_copy(update=defaults)})
        return self.model_copy(update={"data": data})

    @model_validator(mode="after")
    def _pretrained(self) -> JobSpec:
        """A pretrained model brings its tokenizer, and trains with fine-tuning's defaults
        (AdamW, lr 3e-5, linear decay, 6% warmup, weight decay 0.01) unless the spec says
        otherwise."""
        if self.model.type != "pretrained":
            return self
        given = self.training.model_fields_set
        tuned = {
            name: value
            for name, value in FINE_TUNING_DEFAULTS.items()
            if name not in given and not (name == "warmup_ratio" and "warmup_steps" in given)
        }
        if not tuned:
            return self
        training = self.training.model_copy(update=tuned)
        return self.model_copy(update={"training": training})


# What a pretrained model trains with unless the spec's `training` says otherwise.
FINE_TUNING_DEFAULTS: dict[str, Any] = {
    "lr": 3e-5,
    "scheduler": "linear",
    "warmup_ratio": 0.06,
    "weight_decay": 0.01,
}


def dataset_references(spec: JobSpec) -> dict[str, str | None]:
    """role -> the reference each split trains or evaluates on (the task's built-in by default)."""
    return {
        "train": spec.data.dataset or f"builtin:{TASKS[spec.task].default_dataset}",
        "validation": spec.data.validation_dataset,
        "test": spec.data.test_dataset,
    }


def parse_spec(payload: Any) -> JobSpec:
    """Validate a decoded JSON/YAML document into a JobSpec (raises pydantic.ValidationError)."""
    return JobSpec.model_validate(payload)
