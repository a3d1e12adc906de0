"""The job spec: the single source of truth for validation, defaults and documentation.

A spec is JSON (or YAML through the CLI) with five nested sections. Every field has a
default (except `name`) and a description; unknown fields are rejected; model sizes are bounded so that a
spec asking for a model no worker could hold is a 422 at submit, not an OOM in a worker.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from shared.data.datasets import BUILTIN_DATASETS
from shared.registry import MODEL_TYPES, RECURRENT_GATES, TASKS, ModelType, TaskName, describe_tasks

# Upper bound on trainable parameters accepted at submit (about 400 MB of fp32 weights,
# 1.6 GB with AdamW state and gradients). Settings can lower it per deployment.
MAX_MODEL_PARAMETERS = 100_000_000
# Printable text: no control characters (they break logs, pages and PostgreSQL text columns).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelSpec(_Section):
    type: ModelType = Field("lstm", description="Architecture: " + " | ".join(MODEL_TYPES) + ".")
    embedding_dim: int = Field(
        128, ge=2, le=4096, description="Token embedding width (the transformer's d_model)."
    )
    hidden_size: int = Field(
        128,
        ge=1,
        le=8192,
        description="Recurrent hidden state width per direction (recurrent models).",
    )
    num_layers: int = Field(1, ge=1, le=24, description="Stacked recurrent or encoder layers.")
    dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="Dropout probability between layers and before the head."
    )
    nhead: int = Field(4, ge=1, le=64, description="Attention heads (transformer only).")
    dim_feedforward: int = Field(
        512,
        ge=1,
        le=32768,
        description="Feed-forward width inside each encoder layer (transformer only).",
    )

    pooling: Literal["last", "mean", "max", "attention"] = Field(
        "last",
        description="classification with a recurrent model: how token states become one vector "
        "(last real state, mean or max over real tokens, or learned attention). Transformers "
        "always pool with the mean over real tokens.",
    )
    crf: bool = Field(
        True,
        description="tagging: a CRF over the tag scores (BiLSTM-CRF); false: per-token softmax.",
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelSpec:
        if self.type == "transformer" and self.embedding_dim % self.nhead != 0:
            raise ValueError(
                f"embedding_dim ({self.embedding_dim}) must be divisible by nhead ({self.nhead})"
            )
        return self


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
    lowercase: bool = Field(True, description="Lower-case text before tokenizing.")


class DataSpec(_Section):
    dataset: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="Training data: " + DATASET_REFERENCE + " Null: the task's built-in dataset "
        "(builtin:sentiment, builtin:stories, builtin:entities).",
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
        description="Linear warmup steps; null: 5% of all steps, at most 200.",
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


class ResourcesSpec(_Section):
    devices: int = Field(
        1,
        ge=1,
        le=64,
        description="Devices per node the job trains on (GPUs, or CPU processes); more than one "
        "trains with DistributedDataParallel, each device taking `training.batch_size` examples.",
    )
    nodes: int = Field(
        1,
        ge=1,
        le=64,
        description="Workers (one per node) the job trains on together, each with "
        "`resources.devices` devices: all are reserved before any rank starts, and they "
        "rendezvous for one DistributedDataParallel run of nodes x devices ranks.",
    )

    queue: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Worker queue the job is routed to.",
    )
    max_runtime_seconds: int | None = Field(
        None,
        ge=1,
        le=30 * 24 * 3600,
        description="Stop and fail the attempt after this many seconds; null: no limit.",
    )
    max_attempts: int = Field(
        3, ge=1, le=20, description="Attempts (worker lost -> resume) before the job fails."
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

    @field_validator("model")
    @classmethod
    def _model_fits(cls, model: ModelSpec, info: ValidationInfo) -> ModelSpec:
        data = info.data.get("data") or DataSpec()
        task = info.data.get("task", "classification")
        facts = TASKS[task]
        if model.type not in facts.model_types:
            raise ValueError(facts.model_type_reason)
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


def estimate_parameters(
    model: ModelSpec, vocab_size: int, num_classes: int, task: str = "classification"
) -> int:
    """Exact trainable-parameter count of the zoo's model for these sizes (no torch needed).

    `num_classes` is the label count (classification), tag count (tagging); unused for
    language modelling, whose head predicts the vocabulary.
    """
    emb, hidden, layers = model.embedding_dim, model.hidden_size, model.num_layers
    total = vocab_size * emb  # token embedding
    if model.type == "transformer":
        ff = model.dim_feedforward
        # attention in/out projections 4E^2+4E, feed-forward 2EF+F+E, two LayerNorms 4E
        total += layers * (4 * emb * emb + 2 * emb * ff + 9 * emb + ff)
        total += 2 * emb  # final LayerNorm (pre-norm encoder)
        width = emb
    else:
        gates = RECURRENT_GATES[model.type]
        directions = 2 if model.type == "bilstm" else 1
        for layer in range(layers):
            inputs = emb if layer == 0 else hidden * directions
            total += directions * gates * (inputs * hidden + hidden * hidden + 2 * hidden)
        width = hidden * directions
    return total + int(TASKS[task].head_parameters(model, width, vocab_size, num_classes))
