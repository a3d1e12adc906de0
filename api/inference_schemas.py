"""The inference routes' request and response models (predict, generate, translate):
shared limits of what one request may ask of a model."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from api.schemas import _Out


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[Annotated[str, Field(max_length=20_000)]] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Texts to classify (or to tag, split on whitespace).",
    )
    tokens: list[list[Annotated[str, Field(min_length=1, max_length=200)]]] | None = Field(
        None, min_length=1, max_length=256, description="tagging: pre-split sentences."
    )

    @model_validator(mode="after")
    def _one_input(self) -> PredictRequest:
        if (self.texts is None) == (self.tokens is None):
            raise ValueError("give exactly one of texts or tokens")
        return self


class Prediction(_Out):
    label: str | None = None
    probabilities: dict[str, float] | None = None
    tokens: list[str] | None = None
    tags: list[str] | None = None


class PredictResponse(_Out):
    checkpoint_id: int
    predictions: list[Prediction]


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field("", max_length=10_000, description="Text to continue.")
    length: int = Field(200, ge=1, le=2000, description="Tokens to generate.")
    temperature: float = Field(0.8, gt=0.0, le=5.0, description="Sampling temperature.")
    top_k: int | None = Field(
        None, ge=1, le=100_000, description="Sample among the k likeliest tokens."
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Seed for reproducible samples.")


class GenerateResponse(_Out):
    checkpoint_id: int
    prompt: str
    text: str


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


TranslationText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        description="A source text (not blank), at most 2,000 characters.",
    ),
    AfterValidator(_not_blank),
]


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[TranslationText] = Field(
        min_length=1, max_length=64, description="Source texts to translate (1 to 64)."
    )
    beam_size: int | None = Field(
        None, ge=1, le=16, description="Hypotheses kept (1: greedy); null: the spec's decoding."
    )
    length_penalty: float | None = Field(
        None,
        ge=0.0,
        le=5.0,
        description="Scores are divided by ((5 + length) / 6) ** length_penalty; null: the "
        "spec's decoding.",
    )
    max_length: int | None = Field(
        None,
        ge=1,
        le=512,
        description="Most tokens a translation has; null: the spec's decoding (twice the "
        "source's plus 10 by default).",
    )


class Translation(_Out):
    text: str = Field(description="The source text, as given.")
    translation: str
    score: float = Field(
        description="The translation's log-probability divided by the GNMT length penalty "
        "((5 + length) / 6) ** length_penalty (the plain log-probability at 0)."
    )


class TranslateResponse(_Out):
    checkpoint_id: int
    beam_size: int = Field(description="The beam size the translations were decoded with.")
    translations: list[Translation]
