"""A sweep's request: the base job spec, the parameters' distributions (dotted spec paths),
the objective, the budget, the sampler and the pruner. Validated whole at submit: every
path names a field of the job spec, the bounds fit that field's own bounds, and the spec
with each parameter at its extremes (and each choice) validates. Torch- and Optuna-free."""

from __future__ import annotations

import itertools
import math
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo

from shared.registry import TASKS
from shared.spec import PRINTABLE, JobSpec, parse_spec


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FloatParam(_Part):
    type: Literal["float"]
    low: float
    high: float
    log: bool = Field(False, description="Sample on a log scale (low must be > 0).")
    step: float | None = Field(None, gt=0, description="Discretize to multiples of step.")


class IntParam(_Part):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False


Choice = str | int | float | bool | None


class CategoricalParam(_Part):
    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1, max_length=100)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class Objective(_Part):
    metric: str = Field(
        pattern=r"^val/[a-z0-9_]+$",
        description="A validation metric the task reports, e.g. val/accuracy.",
    )
    direction: Literal["maximize", "minimize"]


class PrunerSpec(_Part):
    type: Literal["asha", "hyperband", "median", "none"] = Field(
        "asha",
        description="asha: trials pause at each rung and the best 1/reduction_factor are "
        "promoted (a paused trial may be promoted later); hyperband and median: Optuna's "
        "pruners decide at each rung; none: every trial trains to the end.",
    )
    unit: Literal["epochs", "steps"] = Field(
        "epochs", description="What min_resource counts: epochs, or optimizer steps."
    )
    min_resource: int = Field(
        1, ge=1, le=100_000_000, description="The first rung (decision point)."
    )
    reduction_factor: int = Field(
        3, ge=2, le=100, description="Rungs at min_resource * reduction_factor ** k."
    )
    startup_trials: int = Field(
        5, ge=0, le=1000, description="median: trials never pruned while the median forms."
    )


class SweepSpec(_Part):
    name: str = Field(min_length=1, max_length=200, pattern=PRINTABLE)
    spec: dict[str, Any] = Field(description="The base job spec every trial starts from.")
    parameters: dict[str, Param] = Field(min_length=1, max_length=32)
    objective: Objective
    max_trials: int = Field(16, ge=1, le=1000)
    max_parallel: int = Field(2, ge=1, le=64)
    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("parameters")
    @classmethod
    def _paths(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        for path in parameters:
            if not all(part.isidentifier() for part in path.split(".")):
                raise ValueError(f"{path[:60]!r} is not a dotted spec path")
        return parameters


class SweepError(ValueError):
    """A sweep request that cannot run; `path` names the field (e.g. parameters.training.lr)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def set_path(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `spec` with `value` at the dotted `path` (sections created as needed)."""
    out = dict(spec)
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[parts[-1]] = value
    return out


def trial_spec(base: dict[str, Any], params: dict[str, Any], name: str) -> dict[str, Any]:
    """The job spec of one trial: the base with each parameter set, and its own name."""
    spec = dict(base, name=name[:200])
    for path, value in params.items():
        spec = set_path(spec, path, value)
    return spec


def field_at(path: str) -> FieldInfo:
    """The job spec's field at a dotted path (SweepError when there is none, or it is a
    section rather than a value)."""
    model: type[BaseModel] = JobSpec
    parts = path.split(".")
    for depth, part in enumerate(parts):
        info = model.model_fields.get(part)
        where = ".".join(parts[: depth + 1])
        if info is None:
            valid = ", ".join(sorted(model.model_fields))
            raise SweepError(
                f"parameters.{path}", f"{where} is not a job spec field (valid: {valid})"
            )
        annotation = _section_type(info.annotation)
        if annotation is not None:
            if depth == len(parts) - 1:
                raise SweepError(f"parameters.{path}", f"{where} is a section, not a value")
            model = annotation
            continue
        if depth != len(parts) - 1:
            raise SweepError(f"parameters.{path}", f"{where} is a value, not a section")
        return info
    raise SweepError(f"parameters.{path}", "empty path")  # pragma: no cover


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field (`LoraSpec` of `LoraSpec | None` too), or None."""
    if get_origin(annotation) in (Union, types.UnionType):
        models = [a for a in get_args(annotation) if a is not type(None)]
        annotation = models[0] if len(models) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def field_bounds(info: FieldInfo) -> tuple[float, float, bool, bool]:
    """(low, high, low inclusive, high inclusive) from the field's ge/gt/le/lt."""
    low, high, low_in, high_in = -math.inf, math.inf, True, True
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            low, low_in = float(meta.ge), True  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.Gt):
            low, low_in = float(meta.gt), False  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.Le):
            high, high_in = float(meta.le), True  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.Lt):
            high, high_in = float(meta.lt), False  # type: ignore[arg-type]
    return low, high, low_in, high_in


def _check_bounds(path: str, param: FloatParam | IntParam, info: FieldInfo) -> None:
    where = f"parameters.{path}"
    if param.low > param.high:
        raise SweepError(where, f"low {param.low} is above high {param.high}")
    if param.log and param.low <= 0:
        raise SweepError(where, "a log-scale distribution needs low > 0")
    if param.log and param.step not in (None, 1):
        raise SweepError(where, "a log-scale distribution takes no step (Optuna's rule)")
    low, high, low_in, high_in = field_bounds(info)
    too_low = param.low < low or (param.low == low and not low_in)
    too_high = param.high > high or (param.high == high and not high_in)
    if too_low or too_high:
        lo = f"{'>=' if low_in else '>'} {low:g}" if math.isfinite(low) else ""
        hi = f"{'<=' if high_in else '<'} {high:g}" if math.isfinite(high) else ""
        limits = " and ".join(part for part in (lo, hi) if part)
        raise SweepError(
            where, f"[{param.low:g}, {param.high:g}] is outside {path}'s own bounds ({limits})"
        )


def corners(param: FloatParam | IntParam | CategoricalParam) -> list[Any]:
    """The values a sampled spec is checked with: the extremes, or every choice."""
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    return [param.low, param.high] if param.low != param.high else [param.low]


def resource_corners(sweep: SweepSpec, base: JobSpec) -> list[tuple[dict[str, Any], JobSpec]]:
    """(parameters, trial spec) at each corner of the parameters under `resources`, and
    with each at its highest value together (devices x nodes): what the caller's limits
    are checked against, since each trial is held to them as a job is."""
    base_doc = base.model_dump(mode="json")
    found: list[tuple[dict[str, Any], JobSpec]] = []
    highest: dict[str, Any] = {}
    for path, param in sweep.parameters.items():
        if not path.startswith("resources."):
            continue
        field, top = path.split(".")[1], None
        for value in corners(param):
            spec = _trial(base_doc, {path: value})
            if spec is None:
                continue  # validate_sweep names it
            found.append(({path: value}, spec))
            level = getattr(spec.resources, field)
            if type(level) is int and (top is None or level > top):
                top, highest[path] = level, value
    if len(highest) > 1 and (together := _trial(base_doc, highest)) is not None:
        found.append((highest, together))
    return found


def _trial(base_doc: dict[str, Any], params: dict[str, Any]) -> JobSpec | None:
    try:
        return parse_spec(trial_spec(base_doc, params, "trial"))
    except ValidationError:
        return None


# The most points a grid sweep may have (the grid sampler lists every one).
MAX_GRID_POINTS = 100_000


def grid_points(param: FloatParam | IntParam | CategoricalParam) -> float:
    """How many values the grid sampler would give one parameter, counted without listing
    them (inf for a float range too fine to count); 1 where the distribution is invalid
    (validate_sweep names that)."""
    if isinstance(param, CategoricalParam):
        return len(param.choices)
    if param.step is None or param.high < param.low:
        return 1
    count = (param.high - param.low) / param.step
    return math.floor(count + 1e-9) + 1 if math.isfinite(count) else math.inf


def check_grid_size(sweep: SweepSpec) -> None:
    """A grid sweep is refused past MAX_GRID_POINTS points, before any grid is listed."""
    if sweep.sampler != "grid":
        return
    total = 1.0
    for path, param in sweep.parameters.items():
        total *= grid_points(param)
        if total > MAX_GRID_POINTS:
            raise SweepError(
                f"parameters.{path}",
                f"the grid would have more than {MAX_GRID_POINTS:,} points; use a coarser "
                "step, fewer values, or another sampler",
            )


def grid_space(sweep: SweepSpec) -> dict[str, list[Any]]:
    """Every parameter's values for the grid sampler (floats need a step)."""
    space: dict[str, list[Any]] = {}
    for path, param in sweep.parameters.items():
        if isinstance(param, CategoricalParam):
            space[path] = list(param.choices)
        elif isinstance(param, IntParam):
            space[path] = list(range(param.low, param.high + 1, param.step))
        elif param.step is None:
            raise SweepError(f"parameters.{path}", "the grid sampler needs a step for a float")
        else:
            count = int(math.floor((param.high - param.low) / param.step + 1e-9)) + 1
            space[path] = [round(param.low + i * param.step, 12) for i in range(count)]
    return space


def validate_sweep(payload: Any) -> tuple[SweepSpec, JobSpec]:
    """The sweep and its base job spec, or pydantic's ValidationError (the request's shape)
    or SweepError (a parameter that does not fit the job spec, naming it)."""
    sweep = SweepSpec.model_validate(payload)
    check_grid_size(sweep)  # before anything lists the grid
    try:
        base = parse_spec(sweep.spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SweepError(f"spec.{where}" if where else "spec", f"{first['msg']}") from None
    metric = sweep.objective.metric.removeprefix("val/")
    reported = TASKS[base.task].metrics
    if metric not in reported:
        raise SweepError(
            "objective.metric",
            f"{base.task} reports {', '.join('val/' + m for m in reported)}; not {sweep.objective.metric}",
        )
    for path, param in sweep.parameters.items():
        info = field_at(path)
        if isinstance(param, FloatParam | IntParam):
            _check_bounds(path, param, info)
    if sweep.sampler == "grid":
        space = grid_space(sweep)
        size = math.prod(len(values) for values in space.values())
        if sweep.max_trials > size:
            raise SweepError(
                "max_trials", f"the grid has {size} points; max_trials is {sweep.max_trials}"
            )
    base_doc = base.model_dump(mode="json")
    for path, param in sweep.parameters.items():
        for value in corners(param):
            _check_sampled(base_doc, {path: value}, f"parameters.{path}")
    # The all-low and all-high corners together (sizes that only overflow combined).
    ranged = {p: v for p, v in sweep.parameters.items() if not isinstance(v, CategoricalParam)}
    for pick in itertools.islice(itertools.product(*(corners(v) for v in ranged.values())), 64):
        _check_sampled(base_doc, dict(zip(ranged, pick, strict=True)), "parameters")
    return sweep, base


def _check_sampled(base: dict[str, Any], params: dict[str, Any], where: str) -> None:
    try:
        parse_spec(trial_spec(base, params, "trial"))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        shown = ", ".join(f"{p} = {v!r}" for p, v in params.items())
        raise SweepError(
            where, f"with {shown} the spec is invalid: {field}: {first['msg']}"
        ) from None
