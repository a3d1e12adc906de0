"""Tiny Hugging Face model directories and archives, built without torch.

`bert_dir(path)` writes a 2-layer, 32-wide BERT (config.json, model.safetensors with every
tensor BertModel has, a WordPiece tokenizer.json); `gpt2_dir(path)` a 2-layer GPT-2 with
a byte-level BPE (vocab.json + merges.txt); `t5_dir(path)` a small T5 with a WordPiece
tokenizer. `zip_dir` and `targz_dir` archive a directory, optionally under a top folder;
`zip_members` and `tar_members` build archives member by member (hostile ones too);
`upload_model` posts an archive through a Flask test client.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

WORDS = [
    "the",
    "a",
    "film",
    "movie",
    "was",
    "is",
    "great",
    "good",
    "bad",
    "awful",
    "plot",
    "actor",
    "story",
    "fun",
    "dull",
    "long",
    "short",
    "john",
    "smith",
    "visited",
    "paris",
    "london",
    "acme",
    "corp",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_tokenizer_json() -> str:
    """A WordPiece tokenizer (BERT-style, lowercase) over a small vocabulary, as JSON."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate([*SPECIALS, *WORDS, "##s", "##ed", "##ing"])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tokenizer.to_str()


def vocabulary_size() -> int:
    return len(SPECIALS) + len(WORDS) + 3


def _dense(rng: np.random.Generator, tensors: dict, name: str, rows: int, cols: int) -> None:
    tensors[f"{name}.weight"] = rng.normal(0, 0.02, (rows, cols)).astype(np.float32)
    tensors[f"{name}.bias"] = np.zeros(rows, np.float32)


def _norm(tensors: dict, name: str, width: int) -> None:
    tensors[f"{name}.weight"] = np.ones(width, np.float32)
    tensors[f"{name}.bias"] = np.zeros(width, np.float32)


def bert_config(**overrides: Any) -> dict[str, Any]:
    config = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "vocab_size": vocabulary_size(),
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    }
    config.update(overrides)
    return config


def bert_tensors(config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Every tensor of a BertModel (with pooler) of this configuration."""
    rng = np.random.default_rng(seed)
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    tensors: dict[str, np.ndarray] = {}
    for name, rows in (
        ("word", config["vocab_size"]),
        ("position", config["max_position_embeddings"]),
        ("token_type", config["type_vocab_size"]),
    ):
        tensors[f"embeddings.{name}_embeddings.weight"] = rng.normal(
            0, 0.02, (rows, hidden)
        ).astype(np.float32)
    _norm(tensors, "embeddings.LayerNorm", hidden)
    for i in range(config["num_hidden_layers"]):
        layer = f"encoder.layer.{i}"
        for part in ("query", "key", "value"):
            _dense(rng, tensors, f"{layer}.attention.self.{part}", hidden, hidden)
        _dense(rng, tensors, f"{layer}.attention.output.dense", hidden, hidden)
        _norm(tensors, f"{layer}.attention.output.LayerNorm", hidden)
        _dense(rng, tensors, f"{layer}.intermediate.dense", inner, hidden)
        _dense(rng, tensors, f"{layer}.output.dense", hidden, inner)
        _norm(tensors, f"{layer}.output.LayerNorm", hidden)
    _dense(rng, tensors, "pooler.dense", hidden, hidden)
    return tensors


def parameter_count(tensors: dict[str, np.ndarray]) -> int:
    return sum(int(t.size) for t in tensors.values())


def bert_dir(path: Path, **overrides: Any) -> Path:
    """A loadable 2-layer, 32-wide BERT directory at `path`."""
    path.mkdir(parents=True, exist_ok=True)
    config = bert_config(**overrides)
    (path / "config.json").write_text(json.dumps(config))
    save_file(bert_tensors(config), str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "tokenizer.json").write_text(wordpiece_tokenizer_json())
    (path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    (path / "special_tokens_map.json").write_text(
        json.dumps({"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]"})
    )
    return path


def gpt2_config(**overrides: Any) -> dict[str, Any]:
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "n_inner": None,
        "n_positions": 64,
        "vocab_size": 300,
    }
    config.update(overrides)
    return config


def gpt2_dir(path: Path, **overrides: Any) -> Path:
    """A 2-layer GPT-2 directory with a byte-level BPE (vocab.json + merges.txt)."""
    path.mkdir(parents=True, exist_ok=True)
    config = gpt2_config(**overrides)
    (path / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(1)
    width = config["n_embd"]
    tensors = {
        "wte.weight": rng.normal(0, 0.02, (config["vocab_size"], width)).astype(np.float32),
        "wpe.weight": rng.normal(0, 0.02, (config["n_positions"], width)).astype(np.float32),
    }
    for i in range(config["n_layer"]):
        tensors[f"h.{i}.attn.c_attn.weight"] = np.zeros((width, 3 * width), np.float32)
        tensors[f"h.{i}.mlp.c_fc.weight"] = np.zeros((width, 4 * width), np.float32)
    save_file(tensors, str(path / "model.safetensors"))
    vocab = {chr(c): i for i, c in enumerate(range(33, 127))}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    return path


def t5_dir(path: Path) -> Path:
    """A small T5 (an encoder-decoder) with a WordPiece tokenizer.json."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "t5",
        "architectures": ["T5ForConditionalGeneration"],
        "d_model": 32,
        "d_ff": 64,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "vocab_size": vocabulary_size(),
        "is_encoder_decoder": True,
    }
    (path / "config.json").write_text(json.dumps(config))
    save_file(
        {"shared.weight": np.zeros((config["vocab_size"], 32), np.float32)},
        str(path / "model.safetensors"),
    )
    (path / "tokenizer.json").write_text(wordpiece_tokenizer_json())
    return path


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def zip_dir(directory: Path, target: Path, root: str = "") -> Path:
    """Zip every file under `directory`, under the top folder `root` when given."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in _files(directory):
            name = file.relative_to(directory).as_posix()
            archive.write(file, f"{root}/{name}" if root else name)
    return target


def targz_dir(directory: Path, target: Path, root: str = "") -> Path:
    """A .tar.gz of every file under `directory`, under the top folder `root` when given."""
    with tarfile.open(target, "w:gz") as archive:
        for file in _files(directory):
            name = file.relative_to(directory).as_posix()
            archive.add(file, f"{root}/{name}" if root else name)
    return target


def zip_members(target: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def directory_members(directory: Path) -> dict[str, bytes]:
    """Each file's relative path -> its bytes (to rebuild an archive with changes)."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in _files(directory)}


def tar_members(target: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A .tar.gz of hand-made members: (header, data); data None for links and the like."""
    with tarfile.open(target, "w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return target


def tar_file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def tar_special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def upload_model(client: Any, path: Path, filename: str | None = None, **fields: Any) -> Any:
    """POST a model archive as multipart through a Flask test client; returns the response."""
    form: dict[str, Any] = {k: str(v) for k, v in fields.items()}
    form["file"] = (io.BytesIO(path.read_bytes()), filename or path.name)
    return client.post("/api/v1/models", data=form, content_type="multipart/form-data")
