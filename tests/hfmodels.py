"""Tiny real Hugging Face model directories for the tests, built from configs (no download).

    bert = tiny_bert(tmp_path / "bert", words)     # BertModel + WordPiece tokenizer.json, vocab.txt
    gpt2 = tiny_gpt2(tmp_path / "gpt2", texts)     # GPT2LMHeadModel + byte-level BPE tokenizer.json
    archive(bert, tmp_path / "bert.zip")           # what a user uploads (zip or tar.gz)

Both are 2 layers, hidden 32, 2 heads, 64 positions, saved with `save_pretrained` (safetensors).
Seeded: the same call builds the same weights and files, and leaves the caller's RNG alone.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from tokenizers import (  # noqa: E402
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
END_OF_TEXT = "<|endoftext|>"
SIZES = {"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64, "positions": 64}


def _wordpiece_vocabulary(words: Iterable[str]) -> list[str]:
    """The specials, every (lower-cased) word, and each character alone and as "##c", so
    that an unseen word still splits into pieces rather than [UNK]."""
    seen = sorted({w.lower() for w in words if w.strip()})
    chars = sorted({c for w in seen for c in w})
    pieces = [*chars, *(f"##{c}" for c in chars)]
    vocab = list(BERT_SPECIALS)
    for token in (*seen, *pieces):
        if token not in vocab:
            vocab.append(token)
    return vocab


def tiny_bert(directory: Path, vocab_words: Iterable[str], seed: int = 0) -> Path:
    """A BertModel directory: config.json, model.safetensors, tokenizer.json, vocab.txt."""
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = _wordpiece_vocabulary(vocab_words)
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=SIZES["positions"],
    )
    fast.save_pretrained(str(directory))
    (directory / "vocab.txt").write_text("".join(f"{t}\n" for t in vocab))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=SIZES["hidden"],
        num_hidden_layers=SIZES["layers"],
        num_attention_heads=SIZES["heads"],
        intermediate_size=SIZES["intermediate"],
        max_position_embeddings=SIZES["positions"],
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(str(directory))
    return directory


def tiny_gpt2(directory: Path, texts: Iterable[str], seed: int = 0, vocab_size: int = 400) -> Path:
    """A GPT2LMHeadModel directory with a byte-level BPE tokenizer trained on `texts`."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        model_max_length=SIZES["positions"],
    )
    fast.save_pretrained(str(directory))
    end = tokenizer.token_to_id(END_OF_TEXT)
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=SIZES["positions"],
        n_embd=SIZES["hidden"],
        n_layer=SIZES["layers"],
        n_head=SIZES["heads"],
        bos_token_id=end,
        eos_token_id=end,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(str(directory))
    return directory


def archive(directory: Path, path: Path, fmt: str = "zip") -> Path:
    """`directory`'s files in a .zip or .tar.gz at `path`, names relative to the directory,
    sorted and with fixed times (the same directory gives the same bytes)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    if fmt == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
            for file in files:
                info = zipfile.ZipInfo(str(file.relative_to(directory)), (2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                out.writestr(info, file.read_bytes())
        return path
    if fmt != "tar.gz":
        raise ValueError(f"unknown archive format {fmt!r}; valid: zip, tar.gz")
    with tarfile.open(path, "w:gz") as out:
        for file in files:
            member = out.gettarinfo(str(file), arcname=str(file.relative_to(directory)))
            member.mtime, member.uid, member.gid, member.uname, member.gname = 0, 0, 0, "", ""
            with file.open("rb") as handle:
                out.addfile(member, handle)
    return path
