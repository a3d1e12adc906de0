"""Upload options: the multipart form fields besides `file` that, with the bytes, decide a
dataset's rows (format, columns or fields, encoding, tag scheme), checked against each other
before anything is read."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.infra.listing import NAME_MAX, NAME_PATTERN

_TEXT = r"^[^\x00-\x1f\x7f]+$"


class DatasetUpload(BaseModel):
    """Upload options (multipart form fields besides `file`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None,
        min_length=1,
        max_length=NAME_MAX,
        pattern=NAME_PATTERN,
        description="Name to refer to it by (default: the file's name, which must then obey "
        "the same rules).",
    )
    format: Literal["tsv", "csv", "jsonl", "text", "conll"] = Field(description="File format.")
    encoding: str = Field(
        "utf-8",
        pattern=r"^[A-Za-z0-9_.-]{1,40}$",
        description="Text encoding of the file, e.g. utf-8, latin-1.",
    )
    text_column: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=_TEXT,
        description="tsv/csv: header of the text column; jsonl: text field.",
    )
    label_column: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=_TEXT,
        description="tsv/csv: header of the label column; jsonl: label field.",
    )
    source_column: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=_TEXT,
        description="seq2seq pairs, with target_column instead of text_column: tsv/csv: header "
        "of the source column (e.g. de); jsonl: source field.",
    )
    target_column: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=_TEXT,
        description="seq2seq pairs, with source_column: tsv/csv: header of the target column "
        "(e.g. en); jsonl: target field.",
    )
    token_column: int = Field(0, ge=-64, le=63, description="conll: column index of the token.")
    tag_column: int = Field(
        -1, ge=-64, le=63, description="conll: column index of the tag (-1: last)."
    )
    scheme: Literal["auto", "IOB1", "IOB2", "BIOES"] = Field(
        "auto", description="conll: tag scheme."
    )
    max_classes: int = Field(1000, ge=2, le=100_000, description="Most distinct labels accepted.")

    @model_validator(mode="after")
    def _columns_fit_the_format(self) -> DatasetUpload:
        """tsv/csv/jsonl: text_column (and label_column), or the pair source_column and
        target_column; text/conll: none of them. Pair errors name the field to fix."""
        columns = ("text_column", "label_column", "source_column", "target_column")
        if self.format in ("text", "conll"):
            if any(getattr(self, name) for name in columns):
                raise ValueError(f"{', '.join(columns)} do not apply to {self.format} files")
            return self
        pair = {"source_column": self.source_column, "target_column": self.target_column}
        if not any(pair.values()):
            if self.text_column is None:
                raise _option_error(
                    "text_column",
                    None,
                    f"text_column is required for {self.format} files (or source_column and "
                    "target_column, for seq2seq pairs)",
                )
            return self
        for name, tasks in (
            ("text_column", "classification or language modelling"),
            ("label_column", "classification"),
        ):
            if getattr(self, name) is not None:
                raise _option_error(
                    name,
                    getattr(self, name),
                    f"{name} does not go with source_column and target_column: {name} is "
                    f"for {tasks}, the pair for seq2seq",
                )
        for name, other in (("source_column", "target_column"), ("target_column", "source_column")):
            if pair[name] is None:
                message = f"{name} is required with {other} (seq2seq pairs)"
                raise _option_error(name, None, message)
        return self

    def parse_options(self) -> dict[str, Any]:
        """The options that, with the bytes, determine the rows (stored with the dataset)."""
        if self.format in ("tsv", "csv", "jsonl") and self.source_column is not None:
            return {
                "encoding": self.encoding,
                "source_column": self.source_column,
                "target_column": self.target_column,
            }
        if self.format in ("tsv", "csv", "jsonl"):
            return {
                "encoding": self.encoding,
                "text_column": self.text_column,
                "label_column": self.label_column,
                "max_classes": self.max_classes,
            }
        if self.format == "conll":
            return {
                "encoding": self.encoding,
                "token_column": self.token_column,
                "tag_column": self.tag_column,
                "scheme": self.scheme,
            }
        return {"encoding": self.encoding}


def _option_error(field: str, value: str | None, message: str) -> ValidationError:
    """A DatasetUpload error located at `field`, so the API's 422 names the option to fix
    (a plain ValueError in a model validator would point at the whole form)."""
    error = PydanticCustomError("dataset_options", message)
    return ValidationError.from_exception_data(
        "DatasetUpload", [InitErrorDetails(type=error, loc=(field,), input=value)]
    )
