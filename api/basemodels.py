"""A pretrained job's base model, checked and pinned at submit: the reference in
`model.pretrained` resolved to a registry entry the caller may use, the architecture able to
do the task, `data.max_length` within its positions; the spec then names it `model:<id>`.

All of it reads the registry's rows (the config parsed at upload), never torch or
transformers.
"""

from __future__ import annotations

from typing import Any

from api import services
from api.auth import current_principal
from api.errors import ApiError
from shared.hub import catalog
from shared.hub import registry as hub
from shared.infra.models import PretrainedModel
from shared.spec import JobSpec


def pin_base_model(spec: JobSpec) -> tuple[JobSpec, PretrainedModel | None]:
    """(the spec with `model.pretrained` as `model:<id>`, the base model), or (spec, None)
    for a model trained from scratch. A 422 names each field the base model rules out."""
    if spec.model.type != "pretrained" or spec.model.pretrained is None:
        return spec, None
    principal = current_principal()
    try:
        base = hub.resolve_model(
            services().db,
            spec.model.pretrained,
            principal.user_id,
            principal.is_admin,
            "model.pretrained",
        )
    except hub.ModelError as exc:
        raise refused([(exc.field or "model.pretrained", exc.message)]) from None
    spec = fit_length(spec, base)
    problems = base_model_problems(spec, base)
    if problems:
        raise refused(problems)
    model = spec.model.model_copy(update={"pretrained": f"model:{base.id}"})
    return spec.model_copy(update={"model": model}), base


def fit_length(spec: JobSpec, base: PretrainedModel) -> JobSpec:
    """A `data.max_length` the client left at its default is cut to the model's positions."""
    positions = base.summary.get("max_positions")
    given = "max_length" in spec.data.model_fields_set
    if positions and not given and spec.data.max_length > positions:
        data = spec.data.model_copy(update={"max_length": int(positions)})
        return spec.model_copy(update={"data": data})
    return spec


def base_model_problems(spec: JobSpec, base: PretrainedModel) -> list[tuple[str, str]]:
    """(field, message) for each way `base` cannot train `spec`."""
    problems: list[tuple[str, str]] = []
    name = f"model:{base.id} ({base.name}, {base.model_type})"
    reason = catalog.unfit_reason(base.model_type, base.summary, spec.task)
    if reason is not None:
        problems.append(("model.pretrained", f"{name}: {reason}"))
    positions = base.summary.get("max_positions")
    if positions and spec.data.max_length > positions:
        problems.append(
            (
                "data.max_length",
                f"{spec.data.max_length} is more than the {positions} positions of {name}",
            )
        )
    tied = base.summary.get("tie_word_embeddings") is not False
    if spec.task == "language_modeling" and spec.model.freeze == "encoder" and tied:
        problems.append(
            (
                "model.freeze",
                f"{name} ties its output layer to its embeddings: freezing the encoder leaves "
                "nothing to train; use embeddings, none, or lora",
            )
        )
    causal = catalog.is_causal(base.model_type, base.summary)
    if spec.task == "classification" and spec.model.pooling == "cls" and causal:
        problems.append(
            (
                "model.pooling",
                f"{name} is a causal model: its first token sees nothing after it; use mean",
            )
        )
    return problems


def refused(problems: list[tuple[str, str]]) -> ApiError:
    fields: list[dict[str, Any]] = [
        {"path": path, "message": message, "type": "model"} for path, message in problems
    ]
    paths = ", ".join(sorted({path for path, _ in problems}))
    return ApiError(422, "validation_error", f"invalid job spec: {paths}", fields)
