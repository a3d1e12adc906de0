"""What the installed transformers knows, read from its source and never imported.

The API validates uploads without torch or transformers, yet must refuse a `model_type`
the installed transformers cannot load and an architecture that cannot do a job's task.
Both facts live in transformers' auto-mapping tables (`models/auto/auto_mappings.py` and
`models/auto/modeling_auto.py`), plain `OrderedDict([("bert", "BertModel"), ...])`
literals; this module parses those files with `ast` once per process.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

# The tables read from models/auto/modeling_auto.py, by name.
BASE = "MODEL_MAPPING_NAMES"
SEQUENCE_CLASSIFICATION = "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"
TOKEN_CLASSIFICATION = "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"  # noqa: S105 (a table name)
CAUSAL_LM = "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"
MASKED_LM = "MODEL_FOR_MASKED_LM_MAPPING_NAMES"
SEQ2SEQ = "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"
MODELING_TABLES = (
    BASE,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    CAUSAL_LM,
    MASKED_LM,
    SEQ2SEQ,
)
TASKS = ("classification", "tagging", "language_modeling", "seq2seq")


class CatalogUnavailable(RuntimeError):
    """transformers is not installed, or its tables are not where this module reads them."""


def transformers_dir() -> Path:
    """The installed transformers package's folder. `find_spec` of a top-level package
    locates it without running its `__init__`."""
    spec = importlib.util.find_spec("transformers")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise CatalogUnavailable("transformers is not installed: pretrained models need it")
    return Path(locations[0])


def read_tables(path: Path, names: tuple[str, ...]) -> dict[str, frozenset[str]]:
    """The model types (keys) of each `NAME = OrderedDict([(key, value), ...])` table in
    `path` whose NAME is in `names`."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError) as exc:
        raise CatalogUnavailable(f"cannot read transformers' table file {path}: {exc}") from None
    found: dict[str, frozenset[str]] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if isinstance(target, ast.Name) and target.id in names:
            found[target.id] = frozenset(_keys(node.value))
    missing = sorted(set(names) - set(found))
    if missing:
        raise CatalogUnavailable(f"{path} has no table {', '.join(missing)}")
    return found


def _keys(value: ast.expr) -> list[str]:
    """The string keys of `OrderedDict([("a", ...), ...])`, `dict(...)` or `{...}`."""
    if isinstance(value, ast.Dict):
        return [
            k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
        ]
    if (
        isinstance(value, ast.Call)
        and value.args
        and isinstance(value.args[0], ast.List | ast.Tuple)
    ):
        keys = []
        for item in value.args[0].elts:
            if isinstance(item, ast.Tuple) and item.elts:
                first = item.elts[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    keys.append(first.value)
        return keys
    return []


@cache
def known_model_types() -> frozenset[str]:
    """Every `model_type` the installed transformers has a configuration class for."""
    path = transformers_dir() / "models" / "auto" / "auto_mappings.py"
    return read_tables(path, ("CONFIG_MAPPING_NAMES",))["CONFIG_MAPPING_NAMES"]


@cache
def task_tables() -> dict[str, frozenset[str]]:
    """The model types of each table in MODELING_TABLES."""
    return read_tables(transformers_dir() / "models" / "auto" / "modeling_auto.py", MODELING_TABLES)


def is_encoder_decoder(model_type: str, config: dict[str, object]) -> bool:
    """An encoder-decoder (T5, BART, Marian): config.json says so, or the type is in the
    sequence-to-sequence table and the config does not say otherwise."""
    declared = config.get("is_encoder_decoder")
    if isinstance(declared, bool):
        return declared
    return model_type in task_tables()[SEQ2SEQ]


def is_causal(model_type: str, config: dict[str, object]) -> bool:
    """A decoder-only model (GPT-2, Llama): it has a causal-LM class and is neither an
    encoder-decoder nor a masked-LM encoder (BERT has a causal-LM class too, which is a
    decoder only when its config says `is_decoder`)."""
    tables = task_tables()
    if model_type not in tables[CAUSAL_LM] or is_encoder_decoder(model_type, config):
        return False
    return model_type not in tables[MASKED_LM] or config.get("is_decoder") is True


def unfit_reason(model_type: str, config: dict[str, object], task: str) -> str | None:
    """None when a `model_type` model can be fine-tuned for `task`, else why not, in words
    a user can act on."""
    if task not in TASKS:
        return f"unknown task {task!r}; pretrained models do {', '.join(TASKS)}"
    tables = task_tables()
    kind = _kind(model_type, config)
    if task == "classification":
        # A text model with a sequence-classification form (not CLIP or a vision model);
        # our head pools its base model's states.
        text = model_type in tables[SEQUENCE_CLASSIFICATION] and model_type in tables[BASE]
        if not text or is_encoder_decoder(model_type, config):
            why = (
                kind
                if is_encoder_decoder(model_type, config) or text
                else (f"{kind} without a text-classification form in transformers")
            )
            return (
                f"{model_type} is {why}: it cannot do classification; upload a text encoder "
                "(BERT, RoBERTa, DistilBERT, MiniLM, ...) or a causal model"
            )
        return None
    if task == "tagging":
        if model_type not in tables[TOKEN_CLASSIFICATION]:
            return (
                f"{model_type} is {kind} without a token-classification head: it cannot do "
                "tagging; upload an encoder (BERT, RoBERTa, DistilBERT, ...)"
            )
        return None
    if task == "language_modeling":
        if not is_causal(model_type, config):
            return (
                f"{model_type} is {kind}: it cannot do language_modeling; upload a causal "
                "model (GPT-2, Llama, ...)"
            )
        return None
    if model_type not in tables[SEQ2SEQ] or not is_encoder_decoder(model_type, config):
        return (
            f"{model_type} is {kind}: it cannot do seq2seq; upload an encoder-decoder "
            "model (T5, BART, Marian, ...)"
        )
    return None


def _kind(model_type: str, config: dict[str, object]) -> str:
    """What a model is, in a few words: "an encoder-only model", "a causal model", ..."""
    if is_encoder_decoder(model_type, config):
        return "an encoder-decoder model"
    if is_causal(model_type, config):
        return "a causal (decoder-only) model"
    if model_type in task_tables()[BASE]:
        return "an encoder-only model"
    return "a model without a base-model class in transformers"
