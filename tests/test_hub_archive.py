"""Model archives inspected and unpacked without trust (shared.hub.archive), what the
installed transformers knows (shared.hub.catalog), and the unpacked-model cache
(shared.hub.cache): pure functions on files, no database."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tarfile
import threading
import warnings
import zipfile
from pathlib import Path

import pytest

from shared.hub import catalog
from shared.hub.archive import ModelArchiveError, inspect, unpack
from shared.hub.cache import checkout
from shared.hub.registry import ModelError
from shared.infra.cache import LocalCache
from shared.infra.storage import LocalStore, file_digest
from tests.conftest import ROOT
from tests.hubfiles import (
    bert_config,
    bert_dir,
    bert_tensors,
    directory_members,
    gpt2_dir,
    parameter_count,
    t5_dir,
    tar_file,
    tar_members,
    tar_special,
    targz_dir,
    zip_dir,
    zip_members,
)

MINILM = ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2.zip"
BIG = 1 << 30


@pytest.fixture
def bert(tmp_path: Path) -> Path:
    return bert_dir(tmp_path / "bert")


def refusal(path: Path, max_bytes: int = BIG) -> ModelArchiveError:
    with pytest.raises(ModelArchiveError) as caught:
        inspect(path, max_bytes)
    return caught.value


def safetensors_bytes(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


# ---------------------------------------------------------------- what an archive holds


def test_a_zipped_bert_is_described_exactly(bert, tmp_path):
    found = inspect(zip_dir(bert, tmp_path / "bert.zip"), BIG)
    config = bert_config()
    assert found.format == "zip" and found.model_type == "bert"
    assert found.architectures == ["BertModel"]
    assert found.parameters == parameter_count(bert_tensors(config))
    assert found.dtype == "F32"
    assert {k: found.summary[k] for k in ("hidden_size", "num_layers", "num_heads")} == {
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 4,
    }
    assert found.summary["intermediate_size"] == 64
    assert found.summary["max_positions"] == 64 and found.summary["vocab_size"] == 32
    assert found.summary["is_encoder_decoder"] is False and found.summary["is_causal"] is False
    names = [f["path"] for f in found.files]
    assert names == sorted(
        ["config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json"]
        + ["tokenizer_config.json"]
    )
    sizes = {f["path"]: f["bytes"] for f in found.files}
    assert sizes == {name: (bert / name).stat().st_size for name in names}
    assert found.unpacked_bytes == sum(sizes.values())
    assert found.config["hidden_act"] == "gelu" and found.root == ""


def test_a_tar_gz_under_one_top_folder_is_read_from_it_and_extras_are_ignored(bert, tmp_path):
    (bert / "modules.json").write_text("[]")
    (bert / "README.md").write_text("# a model")
    (bert / "config_sentence_transformers.json").write_text("{}")
    (bert / "1_Pooling").mkdir()
    (bert / "1_Pooling" / "config.json").write_text('{"not": "json"')  # ignored: never read
    (bert / "onnx").mkdir()
    (bert / "onnx" / "model.safetensors").write_bytes(b"not read either")
    archive = targz_dir(bert, tmp_path / "named.zip", root="my-bert")  # the name does not matter
    found = inspect(archive, BIG)
    assert found.format == "tar.gz" and found.root == "my-bert"
    assert "modules.json" not in [f["path"] for f in found.files]
    assert len(found.files) == 5
    out = tmp_path / "out"
    unpack(archive, out, BIG)
    assert sorted(p.name for p in out.iterdir()) == sorted(f["path"] for f in found.files)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (out / name).read_bytes() == (bert / name).read_bytes()


def test_a_top_level_file_beside_a_folder_means_no_top_folder(bert, tmp_path):
    members = {f"pkg/{k}": v for k, v in directory_members(bert).items()}
    members["NOTICE"] = b"x"
    error = refusal(zip_members(tmp_path / "m.zip", members))
    assert error.file == "config.json" and "no config.json" in error.message


def test_sharded_weights_with_their_index(bert, tmp_path):
    from safetensors.numpy import save_file

    tensors = bert_tensors(bert_config())
    names = sorted(tensors)
    half = len(names) // 2
    (bert / "model.safetensors").unlink()
    shards = {"model-00001-of-00002.safetensors": names[:half]}
    shards["model-00002-of-00002.safetensors"] = names[half:]
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(bert / shard))
        weight_map.update(dict.fromkeys(keys, shard))
    index = {"metadata": {}, "weight_map": weight_map}
    (bert / "model.safetensors.index.json").write_text(json.dumps(index))
    found = inspect(zip_dir(bert, tmp_path / "sharded.zip"), BIG)
    assert found.parameters == parameter_count(tensors)
    (bert / "model-00002-of-00002.safetensors").unlink()
    error = refusal(zip_dir(bert, tmp_path / "missing.zip"))
    assert error.file == "model.safetensors.index.json"
    assert "model-00002-of-00002.safetensors" in error.message


def test_gpt2_and_t5_summaries(tmp_path):
    gpt2 = inspect(zip_dir(gpt2_dir(tmp_path / "g"), tmp_path / "g.zip"), BIG)
    assert gpt2.model_type == "gpt2" and gpt2.summary["is_causal"] is True
    assert gpt2.summary["intermediate_size"] == 4 * 32  # n_inner: null
    assert (gpt2.summary["num_layers"], gpt2.summary["num_heads"]) == (2, 4)
    assert gpt2.summary["max_positions"] == 64
    assert {"vocab.json", "merges.txt"} <= {f["path"] for f in gpt2.files}
    t5 = inspect(targz_dir(t5_dir(tmp_path / "t"), tmp_path / "t.tgz"), BIG)
    assert t5.summary["is_encoder_decoder"] is True and t5.summary["hidden_size"] == 32
    assert t5.summary["num_decoder_layers"] == 2 and t5.summary["intermediate_size"] == 64


def test_integer_buffers_do_not_make_the_dtype_mixed_but_two_float_types_do(bert, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    tensors = bert_tensors(bert_config())
    tensors["embeddings.position_ids"] = np.arange(64, dtype=np.int64)[None, :]
    save_file(tensors, str(bert / "model.safetensors"))
    found = inspect(zip_dir(bert, tmp_path / "a.zip"), BIG)
    assert found.dtype == "F32" and found.parameters == parameter_count(tensors)
    tensors["pooler.dense.bias"] = tensors["pooler.dense.bias"].astype(np.float16)
    save_file(tensors, str(bert / "model.safetensors"))
    assert inspect(zip_dir(bert, tmp_path / "b.zip"), BIG).dtype == "mixed"


@pytest.mark.skipif(not MINILM.is_file(), reason=f"{MINILM} is absent (a real model, optional)")
def test_the_real_minilm_archive():
    found = inspect(MINILM, 4 << 30)
    assert found.model_type == "bert" and found.parameters == 22_713_728
    summary = found.summary
    assert (summary["max_positions"], summary["num_layers"], summary["hidden_size"]) == (
        512,
        6,
        384,
    )
    assert (summary["num_heads"], summary["vocab_size"]) == (12, 30522)
    assert "modules.json" not in {f["path"] for f in found.files}
    assert "tokenizer.json" in {f["path"] for f in found.files}


# ---------------------------------------------------------------- refusals, each naming the member

BAD_HEADER = safetensors_bytes({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
REFUSALS = [
    ("absolute path", {"/etc/evil": b"x"}, "/etc/evil", "absolute"),
    ("parent folder", {"a/../../evil": b"x"}, "a/../../evil", ".."),
    ("backslash", {"..\\evil": b"x"}, "..\\evil", "backslash"),
    ("pickle weights", {"pytorch_model.bin": b"x"}, "pytorch_model.bin", "pickle"),
    ("nested pickle", {"extra/optimizer.pt": b"x"}, "extra/optimizer.pt", "pickle"),
    ("numpy file", {"arrays.npz": b"x"}, "arrays.npz", "pickle"),
    ("custom code", {"modeling_mine.py": b"x"}, "modeling_mine.py", "custom code"),
    (
        "auto_map",
        {"config.json": json.dumps(bert_config(auto_map={"AutoModel": "m.M"})).encode()},
        "config.json",
        "auto_map",
    ),
    (
        "trust_remote_code",
        {"tokenizer_config.json": b'{"x": {"trust_remote_code": true}}'},
        "tokenizer_config.json",
        "trust_remote_code",
    ),
    ("no config", {"config.json": None}, "config.json", "no config.json"),
    ("config not JSON", {"config.json": b"{model_type"}, "config.json", "not valid JSON"),
    ("config a list", {"config.json": b"[1, 2]"}, "config.json", "JSON object"),
    ("no model_type", {"config.json": b'{"hidden_size": 3}'}, "config.json", "model_type"),
    (
        "unknown model_type",
        {"config.json": json.dumps(bert_config(model_type="made-up-model")).encode()},
        "config.json",
        "made-up-model",
    ),
    ("no weights", {"model.safetensors": None}, "model.safetensors", "no *.safetensors"),
    (
        "header length",
        {"model.safetensors": struct.pack("<Q", 10**12) + b"{}"},
        "model.safetensors",
        "header",
    ),
    (
        "header not JSON",
        {"model.safetensors": struct.pack("<Q", 4) + b"{{{{" + b"\0" * 8},
        "model.safetensors",
        "not JSON",
    ),
    (
        "offsets disagree with the shape",
        {
            "model.safetensors": safetensors_bytes(
                {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 12
            )
        },
        "model.safetensors",
        "needs 12",
    ),
    ("offsets past the file", {"model.safetensors": BAD_HEADER}, "model.safetensors", "past"),
    (
        "unknown dtype",
        {
            "model.safetensors": safetensors_bytes(
                {"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, b"\0"
            )
        },
        "model.safetensors",
        "unknown dtype",
    ),
    ("no tokenizer", {"tokenizer.json": None}, "tokenizer.json", "no tokenizer"),
]


@pytest.mark.parametrize(
    ("changes", "member", "needle"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_name_the_member(bert, tmp_path, changes, member, needle):
    members = directory_members(bert)
    for name, data in changes.items():
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    error = refusal(zip_members(tmp_path / "bad.zip", members))
    assert error.file == member, error
    assert needle in error.message, error.message
    assert str(error).startswith(member)


def test_a_gpt2_tokenizer_needs_its_merges(tmp_path):
    directory = gpt2_dir(tmp_path / "g")
    (directory / "merges.txt").unlink()
    assert "vocab.json + merges.txt" in refusal(zip_dir(directory, tmp_path / "g.zip")).message


def test_a_member_twice_is_refused(bert, tmp_path):
    target = zip_dir(bert, tmp_path / "twice.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it writes
        with zipfile.ZipFile(target, "a") as archive:
            archive.writestr("config.json", b"{}")
    error = refusal(target)
    assert error.file == "config.json" and "twice" in error.message


def test_not_an_archive(tmp_path):
    path = tmp_path / "model.zip"
    path.write_bytes(b"just some text")
    error = refusal(path)
    assert error.file is None and "not a .zip or .tar.gz" in error.message


def test_a_zip_symlink_is_refused(bert, tmp_path):
    target = zip_dir(bert, tmp_path / "link.zip")
    info = zipfile.ZipInfo("vocab.txt")
    info.external_attr = (0o120777 << 16) | 0x20  # S_IFLNK
    with zipfile.ZipFile(target, "a") as archive:
        archive.writestr(info, "/etc/passwd")
    error = refusal(target)
    assert error.file == "vocab.txt" and "links" in error.message


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        (tarfile.SYMTYPE, "links"),
        (tarfile.LNKTYPE, "links"),
        (tarfile.FIFOTYPE, "FIFO"),
        (tarfile.CHRTYPE, "devices"),
    ],
    ids=["symlink", "hardlink", "fifo", "device"],
)
def test_tar_links_and_devices_are_refused(bert, tmp_path, kind, needle):
    members = [tar_file(name, data) for name, data in directory_members(bert).items()]
    members.append(tar_special("vocab.txt", kind, linkname="/etc/passwd"))
    error = refusal(tar_members(tmp_path / "special.tar.gz", members))
    assert error.file == "vocab.txt" and needle in error.message


def test_tar_path_escapes_are_refused(bert, tmp_path):
    members = [tar_file(name, data) for name, data in directory_members(bert).items()]
    members.append(tar_file("../../outside.txt", b"x"))
    error = refusal(tar_members(tmp_path / "escape.tar.gz", members))
    assert error.file == "../../outside.txt"


# ---------------------------------------------------------------- bombs and lying headers


def test_a_zip_bomb_is_refused_from_its_central_directory_before_any_data(bert, tmp_path):
    members = directory_members(bert)
    members["model.safetensors"] = b"\0" * (4 << 20)  # 4 MiB of zeros: a few KiB compressed
    target = zip_members(tmp_path / "bomb.zip", members)
    with zipfile.ZipFile(target) as archive:
        info = archive.getinfo("model.safetensors")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw = bytearray(target.read_bytes())
    raw[start : start + 64] = b"\xff" * 64  # its data is garbage: reading it would fail
    target.write_bytes(bytes(raw))
    error = refusal(target, max_bytes=1 << 20)
    assert error.file == "model.safetensors" and "1,048,576-byte limit" in error.message
    assert "corrupt" in refusal(target, max_bytes=BIG).message  # what reading it would say


def test_a_tar_bomb_stops_as_soon_as_its_headers_pass_the_limit(bert, tmp_path):
    members = [tar_file(name, data) for name, data in directory_members(bert).items()]
    members.append(tar_file("padding/zeros.dat", b"\0" * (2 << 20)))
    members.append(tar_file("padding/more.dat", b"\0" * (2 << 20)))
    error = refusal(tar_members(tmp_path / "bomb.tar.gz", members), max_bytes=3 << 20)
    assert error.file == "padding/more.dat" and "limit" in error.message


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path):
    import gzip

    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 64 << 20  # 64 MiB of "metadata"
    target = tmp_path / "pax.tar.gz"
    with gzip.open(target, "wb") as out:
        out.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        out.write(b"\0" * (64 << 20))
    error = refusal(target)
    assert "extended header" in error.message and "67,108,864" in error.message


def _lie_about_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size in `member`'s local and central headers."""
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo(member).header_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 22 : offset + 26] = struct.pack("<I", size)
    at = raw.find(b"PK\x01\x02")
    while at != -1:
        name_length = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46 : at + 46 + name_length] == member.encode():
            raw[at + 24 : at + 28] = struct.pack("<I", size)
        at = raw.find(b"PK\x01\x02", at + 46)
    path.write_bytes(bytes(raw))


def test_unpack_counts_real_bytes_so_a_lying_zip_header_is_caught(bert, tmp_path):
    target = zip_dir(bert, tmp_path / "liar.zip")
    real = (bert / "tokenizer.json").stat().st_size
    _lie_about_size(target, "tokenizer.json", 100)
    found = inspect(target, BIG)  # the declared sizes pass (tokenizer.json is not read)
    assert {f["path"]: f["bytes"] for f in found.files}["tokenizer.json"] == 100 < real
    out = tmp_path / "out"
    with pytest.raises(ModelArchiveError) as caught:
        unpack(target, out, BIG)
    assert caught.value.file == "tokenizer.json"
    assert (out / "tokenizer.json").stat().st_size <= 100


# ---------------------------------------------------------------- the catalog


def test_the_catalog_knows_the_installed_model_types():
    known = catalog.known_model_types()
    assert {"bert", "gpt2", "t5", "roberta", "llama"} <= known
    assert "made-up-model" not in known


@pytest.mark.parametrize(
    ("model_type", "config", "task", "needle"),
    [
        ("bert", {}, "classification", None),
        ("bert", {}, "tagging", None),
        ("bert", {}, "language_modeling", "bert is an encoder-only model"),
        ("bert", {}, "seq2seq", "encoder-decoder"),
        ("gpt2", {}, "language_modeling", None),
        ("gpt2", {}, "classification", None),
        ("gpt2", {}, "seq2seq", "causal"),
        ("t5", {"is_encoder_decoder": True}, "seq2seq", None),
        ("t5", {}, "classification", "t5 is an encoder-decoder model"),
        ("t5", {}, "language_modeling", "upload a causal model"),
        ("bart", {}, "seq2seq", None),
        ("distilbert", {}, "classification", None),
        ("bert", {}, "translation", "unknown task"),
        ("clip", {}, "classification", "without a text-classification form"),
    ],
)
def test_unfit_reasons(model_type, config, task, needle):
    reason = catalog.unfit_reason(model_type, config, task)
    assert (reason is None) if needle is None else (needle in (reason or "")), reason


def test_what_is_causal():
    assert catalog.is_causal("gpt2", {}) and catalog.is_causal("llama", {})
    assert not catalog.is_causal("bert", {}) and not catalog.is_causal("t5", {})
    assert catalog.is_causal("bert", {"is_decoder": True})  # BertLMHeadModel as a decoder
    assert not catalog.is_causal("bart", {})  # an encoder-decoder, whatever its tables


def test_the_hub_imports_neither_torch_nor_transformers():
    code = (
        "import sys; import shared.hub.archive, shared.hub.cache, shared.hub.registry, "
        "api.models, cli.models; from shared.hub import catalog; "
        "assert 'bert' in catalog.known_model_types(); catalog.unfit_reason('bert', {}, 'tagging'); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = dict(os.environ, DATABASE_URL="sqlite:///:memory:")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- the cache


def stored_archive(bert: Path, tmp_path: Path) -> tuple[LocalStore, str, str]:
    store = LocalStore(tmp_path / "artifacts")
    staging = store.staging_path("models/x")
    zip_dir(bert, staging)
    _, digest = file_digest(staging)
    store.commit(staging, f"models/{digest}")
    return store, f"models/{digest}", digest


def test_checkout_unpacks_once_per_hash_even_when_raced(bert, tmp_path):
    store, uri, digest = stored_archive(bert, tmp_path)
    cache = LocalCache(tmp_path / "cache", BIG)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(checkout(store, uri, digest, cache, BIG)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [cache.root / "models" / digest] * 4
    folder = results[0]
    assert (folder / "model.safetensors").read_bytes() == (bert / "model.safetensors").read_bytes()
    assert sorted(p.name for p in (cache.root / "models").iterdir()) == [digest, f"{digest}.lock"]
    before = (folder / "config.json").stat().st_mtime_ns
    assert checkout(store, uri, digest, cache, BIG) == folder
    assert (folder / "config.json").stat().st_mtime_ns == before


def test_checkout_refuses_a_changed_or_missing_archive(bert, tmp_path):
    store, uri, digest = stored_archive(bert, tmp_path)
    store.path(uri).write_bytes(store.path(uri).read_bytes() + b"tampered")
    with pytest.raises(ModelError, match="has changed since its upload"):
        checkout(store, uri, digest, LocalCache(tmp_path / "cache", BIG), BIG)
    store.delete(uri)
    with pytest.raises(ModelError, match="missing from the artifact store"):
        checkout(store, uri, digest, LocalCache(tmp_path / "cache", BIG), BIG)
    assert not (tmp_path / "cache" / "models" / digest).exists()
    with pytest.raises(ModelError, match="invalid model content hash"):
        checkout(store, uri, "../../etc", LocalCache(tmp_path / "cache", BIG), BIG)


def test_a_zip_directory_too_large_to_parse_is_refused_from_its_end_record(tmp_path):
    """The end record's counts are read before zipfile builds an object per member."""
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(10_001):
            archive.writestr(f"f{index}", b"")
    assert "more than 10,000 members" in refusal(path).message


def test_roberta_positions_leave_out_the_two_its_pads_take(tmp_path):
    from shared.hub.archive import summary

    config = {"max_position_embeddings": 514, "pad_token_id": 1, "hidden_size": 8}
    assert summary("roberta", config)["max_positions"] == 512
    assert summary("bert", {**config, "max_position_embeddings": 512})["max_positions"] == 512


def test_a_sentencepiece_model_alone_is_refused_with_what_to_add(bert, tmp_path):
    (bert / "tokenizer.json").unlink()
    (bert / "vocab.txt").unlink(missing_ok=True)
    (bert / "spiece.model").write_bytes(b"\x00" * 16)
    error = refusal(zip_dir(bert, tmp_path / "m.zip"))
    assert error.file == "spiece.model" and "tokenizer.json" in error.message


def test_checkout_clears_what_a_killed_unpack_left(bert, tmp_path):
    store, uri, digest = stored_archive(bert, tmp_path)
    models = tmp_path / "cache" / "models"
    stale = models / f".{digest}.deadbeef.tmp"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    assert checkout(store, uri, digest, LocalCache(tmp_path / "cache", BIG), BIG) == models / digest
    assert not stale.exists()
