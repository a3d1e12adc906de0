"""The job spec's base section and its `model` section (architecture and sizes, a
pretrained base model's options, LoRA); shared.spec assembles the whole spec."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.registry import MODEL_TYPES, ModelType

# Printable text: no control characters (they break logs, pages and PostgreSQL text columns).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LoraSpec(_Section):
    r: int = Field(8, ge=1, le=1024, description="Rank of each low-rank update.")
    alpha: float = Field(16.0, gt=0.0, le=100_000.0, description="Scale of the update (alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapters' input.")
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description='Names of the modules that get adapters (e.g. ["query", "value"]); '
        "null: peft's defaults for the model's architecture.",
    )

    @field_validator("target_modules")
    @classmethod
    def _module_names(cls, names: list[str] | None) -> list[str] | None:
        for name in names or ():
            if not re.fullmatch(r"[A-Za-z0-9_.]{1,100}", name):
                raise ValueError(f"{name[:40]!r} is not a module name (letters, digits, _ and .)")
        return names


# The fields that size a model trained from scratch; a pretrained model's config sizes it.
SCRATCH_SIZE_FIELDS = ("embedding_dim", "hidden_size", "num_layers", "nhead", "dim_feedforward")


class ModelSpec(_Section):
    type: ModelType = Field(
        "lstm",
        description="Architecture: "
        + " | ".join(MODEL_TYPES)
        + " (pretrained: fine-tune a base model from the model registry, `model.pretrained`).",
    )
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

    pooling: Literal["last", "mean", "max", "attention", "cls"] = Field(
        "last",
        description="classification: how token states become one vector (last real state, "
        "mean or max over real tokens, learned attention, or the first token: `cls`, pretrained "
        "encoders only). A transformer trained from scratch always pools with the mean; a "
        "pretrained model pools with the mean unless set.",
    )
    crf: bool = Field(
        True,
        description="tagging: a CRF over the tag scores (BiLSTM-CRF; on a pretrained model, over "
        "each word's first sub-token); false: per-token softmax.",
    )
    pretrained: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="type pretrained: the base model, `model:<id>` or the name of a model in the "
        "registry (yours, else a shared one); pinned at submit.",
    )
    freeze: Literal["none", "embeddings", "encoder"] = Field(
        "none",
        description="type pretrained: parts of the base model kept fixed (encoder: only the head "
        "trains).",
    )
    lora: LoraSpec | None = Field(
        None,
        description="type pretrained: train low-rank adapters (LoRA, with peft) instead of the "
        "base weights; checkpoints then hold only the adapters and the head.",
    )
    attention: Literal["additive", "dot", "general"] = Field(
        "additive",
        description="seq2seq, recurrent models: how the decoder scores the encoder's states: "
        "additive (Bahdanau), dot or general (Luong's multiplicative).",
    )
    share_embeddings: bool = Field(
        False,
        description="seq2seq: one embedding table for source and target tokens (needs "
        "data.tokenizer.shared).",
    )
    tie_embeddings: bool = Field(
        False,
        description="seq2seq: the decoder's output layer reuses its input embeddings (recurrent "
        "models need embedding_dim equal to hidden_size).",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="type pretrained: recompute the base model's activations in backward "
        "(less memory, about a third slower).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.type == "transformer" and self.embedding_dim % self.nhead != 0:
            raise ValueError(
                f"embedding_dim ({self.embedding_dim}) must be divisible by nhead ({self.nhead})"
            )
        # Judged by value, not by what the client wrote: a stored spec lists every field.
        fields = type(self).model_fields
        if self.type != "pretrained":
            given = [
                name
                for name in ("pretrained", "freeze", "lora", "gradient_checkpointing")
                if getattr(self, name) != fields[name].default
            ]
            if given:
                verb = "applies" if len(given) == 1 else "apply"
                raise ValueError(f"{', '.join(given)} {verb} only to type pretrained")
            if self.pooling == "cls":
                raise ValueError("pooling cls needs a pretrained encoder (type pretrained)")
            return self
        if self.pretrained is None:
            raise ValueError("type pretrained needs `pretrained`: model:<id> or a model's name")
        if self.lora is not None and self.freeze != "none":
            raise ValueError(
                "lora already keeps the base model fixed; leave freeze out (or none) with lora"
            )
        sized = [
            name for name in SCRATCH_SIZE_FIELDS if getattr(self, name) != fields[name].default
        ]
        if sized:
            raise ValueError(
                f"{', '.join(sized)}: a pretrained model's sizes come from its config; leave "
                "them out"
            )
        if self.pooling == "last":
            if "pooling" in self.model_fields_set:
                raise ValueError("pooling last is for recurrent models; use cls or mean")
            return self.model_copy(update={"pooling": "mean"})
        return self
