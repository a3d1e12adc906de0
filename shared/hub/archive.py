"""A Hugging Face model directory as an uploaded .zip or .tar.gz: inspected and unpacked
without trusting it, and without torch or transformers.

`inspect` walks the archive once (never extracting to disk) and refuses, naming the member:
unsafe paths and links (shared.hub.members), pickle-capable files and custom code anywhere,
`auto_map` and `trust_remote_code` in the configuration, a missing or unknown
`config.json`, missing or malformed safetensors weights, shards an index names but the
archive lacks, and a missing tokenizer. It reads the safetensors headers (8-byte
little-endian length, then JSON: each tensor's dtype, shape and byte range) to count the
parameters exactly. `unpack` writes the files a model needs, flat, into a folder, counting
the bytes it really writes.

An archive whose files all sit under one top folder is read from that folder; files that
a model does not need (sentence-transformers' modules.json, 1_Pooling/, READMEs, any
subfolder) are ignored: neither kept nor unpacked, but still checked for the unsafe kinds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.hub import catalog
from shared.hub.members import MemberReader, ModelArchiveError, Opener, walk
from shared.hub.weights import WeightFile, read_header, total_parameters, weights_dtype

__all__ = ["Inspected", "ModelArchiveError", "inspect", "unpack"]

# RoBERTa and its kin number positions from pad_token_id + 1, so max_position_embeddings
# (514) counts two positions no token can take.
OFFSET_POSITION_TYPES = frozenset(
    {
        "roberta",
        "roberta-prelayernorm",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "longformer",
        "data2vec-text",
        "mpnet",
        "ibert",
        "xmod",
    }
)
# Tensors over all safetensors files (each header is bounded too): real models have
# thousands; a header's names are kept in memory while the archive is checked.
MAX_TENSORS = 200_000

KEPT_NAMES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "spiece.model",
        "tokenizer.model",
        "sentencepiece.bpe.model",
    }
)
# The kept files read while inspecting (the rest are only sized and unpacked).
JSON_NAMES = ("config.json", "tokenizer_config.json", "model.safetensors.index.json")
MAX_JSON_BYTES = 32 << 20
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz")
CODE_SUFFIXES = (".py", ".pyc")
# One of these sets of files is a tokenizer transformers can load without the
# sentencepiece library (not installed): a sentencepiece model needs its tokenizer.json too.
TOKENIZER_FILES = (
    ("tokenizer.json",),
    ("vocab.txt",),
    ("vocab.json", "merges.txt"),
)
SENTENCEPIECE_FILES = ("spiece.model", "tokenizer.model", "sentencepiece.bpe.model")
REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code")
# Folders that archiving tools add beside the real content (macOS Finder).
TOOL_FOLDERS = ("__MACOSX",)


@dataclass(frozen=True)
class Inspected:
    """What an archive holds. `files` are the kept files, flat (path, bytes); `root` the
    top folder they were read from ("" when none)."""

    format: str
    model_type: str
    architectures: list[str]
    parameters: int
    dtype: str
    summary: dict[str, Any]
    files: list[dict[str, Any]]
    unpacked_bytes: int
    config: dict[str, Any]
    root: str = ""


def is_kept(name: str) -> bool:
    return name in KEPT_NAMES or name.endswith(".safetensors")


def refuse_unsafe(name: str, parts: tuple[str, ...]) -> None:
    """Pickle-capable files and code, wherever they sit in the archive."""
    base = parts[-1].lower() if parts else ""
    if base.endswith(PICKLE_SUFFIXES):
        raise ModelArchiveError(
            f"pickle-capable files ({', '.join('*' + s for s in PICKLE_SUFFIXES)}) can run "
            "code when loaded; upload the weights as *.safetensors only",
            name,
        )
    if base.endswith(CODE_SUFFIXES):
        raise ModelArchiveError(
            "custom code files (*.py) are not allowed: models run only code that ships "
            "with the installed transformers",
            name,
        )


_UNKNOWN = object()


@dataclass
class _Collector:
    """The kept files, gathered in one pass. The top folder is decided as files arrive: it
    stays possible while every file so far sits under the same first folder, so data is
    read for one candidate set of files at most."""

    root: Any = _UNKNOWN  # _UNKNOWN, None (no top folder), or the folder's name
    sizes: dict[str, int] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # kept name -> member name
    json: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, WeightFile] = field(default_factory=dict)

    def place(self, parts: tuple[str, ...]) -> None:
        if parts[0] in TOOL_FOLDERS:
            return
        if len(parts) == 1 or self.root is None:
            folder = None
        else:
            folder = parts[0] if self.root in (_UNKNOWN, parts[0]) else None
        if folder is None and self.root not in (_UNKNOWN, None):
            self._drop_folder()
        self.root = folder

    def _drop_folder(self) -> None:
        """A top folder is no longer possible: what was gathered (all from it, since a
        top-level file rules a top folder out) is not kept."""
        for table in (self.sizes, self.names, self.json, self.weights):
            table.clear()

    def kept_name(self, parts: tuple[str, ...]) -> str | None:
        """The flat name a file is kept under, or None when it is ignored."""
        if len(parts) == 1 and self.root in (_UNKNOWN, None):
            name = parts[0]
        elif len(parts) == 2 and self.root not in (_UNKNOWN, None) and parts[0] == self.root:
            name = parts[1]
        else:
            return None
        return name if is_kept(name) else None

    def add(self, member_name: str, kept: str, size: int, opener: Opener) -> None:
        if kept in self.names:
            raise ModelArchiveError(f"{kept} appears twice in the archive", member_name)
        self.names[kept], self.sizes[kept] = member_name, size
        if kept in JSON_NAMES:
            self.json[kept] = read_json(opener(), size)
        elif kept.endswith(".safetensors"):
            weights = read_header(opener(), size)
            self.weights[kept] = weights
            tensors = sum(len(w.tensors) for w in self.weights.values())
            if tensors > MAX_TENSORS:
                raise ModelArchiveError(
                    f"the weights hold more than {MAX_TENSORS:,} tensors", member_name
                )


def read_json(reader: MemberReader, size: int) -> Any:
    from shared import safejson

    if size > MAX_JSON_BYTES:
        raise ModelArchiveError(
            f"is {size:,} bytes; at most {MAX_JSON_BYTES:,} are read", reader.name
        )
    raw = reader.exactly(size)
    try:
        return safejson.loads(raw)
    except ValueError as exc:  # invalid UTF-8 or JSON, or nested too deep
        raise ModelArchiveError(f"is not valid JSON ({exc})", reader.name) from None


def _collect(path: Path, max_bytes: int) -> tuple[str, _Collector]:
    from shared.hub.members import archive_format

    fmt = archive_format(path)
    found = _Collector()
    for member, opener in walk(path, max_bytes):
        refuse_unsafe(member.name, member.parts)
        if member.is_dir or not member.parts:
            continue
        found.place(member.parts)
        kept = found.kept_name(member.parts)
        if kept is not None:
            found.add(member.name, kept, member.size, opener)
    return fmt, found


def inspect(path: Path, max_bytes: int) -> Inspected:
    """Validate an uploaded model archive and describe it; ModelArchiveError (naming the
    member) for anything unsafe, missing or malformed. Nothing is written to disk."""
    fmt, found = _collect(path, max_bytes)
    config = _config(found)
    model_type = config["model_type"]
    _check_weights(found)
    _check_tokenizer(found)
    files = [{"path": name, "bytes": found.sizes[name]} for name in sorted(found.sizes)]
    architectures = config.get("architectures")
    return Inspected(
        format=fmt,
        model_type=model_type,
        architectures=[a for a in architectures if isinstance(a, str)]
        if isinstance(architectures, list)
        else [],
        parameters=total_parameters(found.weights.values()),
        dtype=weights_dtype(found.weights.values()),
        summary=summary(model_type, config),
        files=files,
        unpacked_bytes=sum(found.sizes.values()),
        config=config,
        root=found.root if isinstance(found.root, str) else "",
    )


def _member(found: _Collector, kept: str) -> str:
    return found.names.get(kept, kept)


def _config(found: _Collector) -> dict[str, Any]:
    """config.json: present, an object, a model_type the installed transformers knows, and
    nothing that would load remote code (in it or in tokenizer_config.json)."""
    if "config.json" not in found.json:
        raise ModelArchiveError(
            "the archive has no config.json (at its top level, or in its one top folder)",
            "config.json",
        )
    config = found.json["config.json"]
    where = _member(found, "config.json")
    if not isinstance(config, dict):
        raise ModelArchiveError("must hold a JSON object", where)
    for kept in ("config.json", "tokenizer_config.json"):
        if kept in found.json and (key := _remote_code_key(found.json[kept])):
            raise ModelArchiveError(
                f"`{key}` asks to run code from the model's files; only models that the "
                "installed transformers implements can be uploaded",
                _member(found, kept),
            )
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelArchiveError('has no `model_type` (e.g. "bert", "gpt2")', where)
    if model_type not in catalog.known_model_types():
        raise ModelArchiveError(
            f"model_type {model_type[:60]!r} is not one the installed transformers knows",
            where,
        )
    return config


def _remote_code_key(value: Any, depth: int = 0) -> str | None:
    """`auto_map` or `trust_remote_code` (unless false) anywhere in a JSON document."""
    if depth > 64:
        return None
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "auto_map" or (key == "trust_remote_code" and inner is not False):
                return str(key)
            if found := _remote_code_key(inner, depth + 1):
                return found
    elif isinstance(value, list):
        for inner in value:
            if found := _remote_code_key(inner, depth + 1):
                return found
    return None


def _check_weights(found: _Collector) -> None:
    if not found.weights:
        raise ModelArchiveError(
            "the archive has no *.safetensors weights (pickle-based weights are refused; "
            "convert them with safetensors)",
            "model.safetensors",
        )
    index = found.json.get("model.safetensors.index.json")
    if index is None:
        return
    where = _member(found, "model.safetensors.index.json")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelArchiveError("has no `weight_map` object of tensor -> shard file", where)
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or shard not in found.weights:
            raise ModelArchiveError(
                f"names shard {str(shard)[:100]!r} (for tensor {str(tensor)[:100]!r}), "
                "which the archive does not hold",
                where,
            )
        if tensor not in found.weights[shard].tensors:
            raise ModelArchiveError(
                f"puts tensor {str(tensor)[:100]!r} in {shard}, whose header lacks it", where
            )


def _check_tokenizer(found: _Collector) -> None:
    if not any(all(name in found.sizes for name in files) for files in TOKENIZER_FILES):
        alone = next((name for name in SENTENCEPIECE_FILES if name in found.sizes), None)
        if alone is not None:
            raise ModelArchiveError(
                "a sentencepiece model alone cannot be read here (the service has no "
                "sentencepiece library); add the tokenizer's tokenizer.json (save it with a "
                "fast tokenizer: tokenizer.save_pretrained)",
                alone,
            )
        choices = ", ".join(" + ".join(files) for files in TOKENIZER_FILES)
        raise ModelArchiveError(
            f"the archive has no tokenizer: it needs one of {choices}", "tokenizer.json"
        )


def _first_int(config: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def summary(model_type: str, config: dict[str, Any]) -> dict[str, Any]:
    """The architecture's sizes, under one name each whatever config.json calls them, and
    its kind (what shared.hub.catalog's checks read, so the summary can stand in for the
    config)."""
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model", "dim")
    intermediate = _first_int(config, "intermediate_size", "d_ff", "hidden_dim")
    if intermediate is None and "n_inner" in config:
        # GPT-2 writes n_inner: null for the default, four times the width.
        n_inner = config["n_inner"]
        intermediate = n_inner if isinstance(n_inner, int) else (4 * hidden if hidden else None)
    tie = config.get("tie_word_embeddings")
    positions = _first_int(config, "max_position_embeddings", "n_positions")
    pad = config.get("pad_token_id")
    if positions and model_type in OFFSET_POSITION_TYPES and isinstance(pad, int):
        positions -= pad + 1  # their position ids start after the pad's: 514 -> 512
    return {
        "hidden_size": hidden,
        "num_layers": _first_int(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers"),
        "num_decoder_layers": _first_int(config, "num_decoder_layers", "decoder_layers"),
        "num_heads": _first_int(config, "num_attention_heads", "n_head", "num_heads", "n_heads"),
        "intermediate_size": intermediate,
        "vocab_size": _first_int(config, "vocab_size"),
        "max_positions": positions,
        # These three let the summary stand in for config.json in shared.hub.catalog.
        "is_encoder_decoder": catalog.is_encoder_decoder(model_type, config),
        "is_decoder": config.get("is_decoder") is True,
        "is_causal": catalog.is_causal(model_type, config),
        "tie_word_embeddings": tie if isinstance(tie, bool) else None,
    }


# ---------------------------------------------------------------- unpack


def unpack(path: Path, dest: Path, max_bytes: int) -> Inspected:
    """Inspect, then write the kept files flat into `dest` (created if absent), counting
    the bytes really written: a member whose header understates its size, or files that
    pass `max_bytes` in all, are refused however the archive describes itself."""
    inspected = inspect(path, max_bytes)
    wanted = {f["path"]: f["bytes"] for f in inspected.files}
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    total = 0
    for member, opener in walk(path, max_bytes):
        if member.is_dir or not member.parts:
            continue
        name = _flat_name(member.parts, inspected.root)
        if name is None or name not in wanted or name in written:
            continue
        written[name] = _copy(opener(), dest / name, wanted[name], max_bytes - total)
        total += written[name]
    for name, size in wanted.items():
        if written.get(name) != size:
            raise ModelArchiveError(
                f"holds {written.get(name, 0):,} bytes where {size:,} were declared", name
            )
    return inspected


def _flat_name(parts: tuple[str, ...], root: str) -> str | None:
    if root:
        return parts[1] if len(parts) == 2 and parts[0] == root else None
    return parts[0] if len(parts) == 1 else None


def _copy(reader: MemberReader, target: Path, declared: int, budget: int) -> int:
    """Copy a member to `target` (a new file; never through a link); refuse once it passes
    its declared size or the bytes left of the bound."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    size = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := reader.read(1 << 20):
            size += len(chunk)
            if size > declared:
                raise ModelArchiveError(
                    f"holds more than the {declared:,} bytes its header declares", reader.name
                )
            if size > budget:
                raise ModelArchiveError(
                    "unpacks past the SEQTRAIN_MAX_MODEL_BYTES limit", reader.name
                )
            out.write(chunk)
    return size
