"""Pretrained Hugging Face models under our forward contract, offline always.

load_backbone            a base model's directory -> its transformers module in fp32, with
                         `freeze`, LoRA adapters (peft) and gradient checkpointing applied
PretrainedEncoder        token states (B, T, D) for the classifier and tagger heads
PretrainedLanguageModel  next-token logits (B, T, V); sampling within the model's positions
pretrained_encoder, pretrained_language_model   what the task plug-ins build for type pretrained
pretrained_tokenizer     the base model's own tokenizer, as a PretrainedTokenizer

The worker resolves `model.pretrained` to an unpacked directory (shared.hub) and hands it
here; nothing here ever reaches the network: the Hub's offline switches are set before
transformers is imported, every load is `local_files_only`, safetensors only, and no code
from the directory runs (`trust_remote_code=False`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from shared.data.pretrained_tokens import PretrainedTokenizer
from shared.protocol import IGNORE_INDEX, TrainerFailure
from shared.spec import LoraSpec, ModelSpec
from shared.zoo.encoders import padding_mask

# Set before transformers (and huggingface_hub, which reads them at import) is imported.
OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
}
os.environ.update(OFFLINE_ENVIRONMENT)

Kind = Literal["encoder", "causal_lm"]


class PretrainedModelError(TrainerFailure, ValueError):
    """The base model cannot be used as the spec asks; the message names the field."""


def _transformers() -> ModuleType:
    """transformers, imported offline (the import itself is about a second)."""
    os.environ.update(OFFLINE_ENVIRONMENT)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    return transformers


def warm_up() -> None:
    """Import what a pretrained job loads (transformers' auto classes, its BERT and GPT-2
    code, peft), running no kernel: the fork-server does this once, so a forked trainer
    starts without the imports (a kernel run before a fork would hang the children's
    OpenMP pools)."""
    transformers = _transformers()
    for name in ("AutoModel", "AutoModelForCausalLM", "AutoTokenizer", "BertModel", "GPT2Model"):
        getattr(transformers, name)
    import peft  # noqa: F401


def read_config(backbone: Path) -> dict[str, Any]:
    """The directory's config.json (validated at upload; read here without transformers)."""
    try:
        config: dict[str, Any] = json.loads((backbone / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise PretrainedModelError(
            f"model.pretrained: no readable config.json ({error})"
        ) from error
    return config


def max_positions(config: dict[str, Any]) -> int | None:
    """The longest sequence the model's position embeddings cover (None: not stated)."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def _check_kind(config: dict[str, Any], kind: Kind) -> None:
    from shared.hub.catalog import is_causal, is_encoder_decoder

    model_type = str(config.get("model_type", ""))
    if kind == "causal_lm" and not is_causal(model_type, config):
        raise PretrainedModelError(
            f"model.pretrained: {model_type} is not a causal (decoder-only) model, so it cannot "
            "do language_modeling; use a causal model (GPT-2, Llama, ...)"
        )
    if kind == "encoder" and is_encoder_decoder(model_type, config):
        raise PretrainedModelError(
            f"model.pretrained: {model_type} is an encoder-decoder model; classification and "
            "tagging need an encoder (BERT, RoBERTa, DistilBERT, ...)"
        )


def load_backbone(backbone: Path, model: ModelSpec, kind: Kind) -> nn.Module:
    """The base model of `backbone` as `kind` (a bare encoder or a causal LM with its head),
    fp32 (autocast makes bf16 on CUDA), ready to train as `model` says."""
    config = read_config(backbone)
    _check_kind(config, kind)
    transformers = _transformers()
    auto = transformers.AutoModelForCausalLM if kind == "causal_lm" else transformers.AutoModel
    module: Any = auto.from_pretrained(
        str(backbone),
        local_files_only=True,
        trust_remote_code=False,
        use_safetensors=True,
        dtype=torch.float32,
    )
    module.config.use_cache = False  # training; generation asks for the cache itself
    if getattr(module, "pooler", None) is not None:
        # BERT's pooler ([CLS] -> dense -> tanh) is not read by our heads; a parameter that
        # gets no gradient would also fail DDP.
        module.pooler = None
    freeze(module, model.freeze, kind)
    if model.lora is not None:
        add_lora(module, model.lora, str(config.get("model_type", "")))
    if not any(p.requires_grad for p in module.parameters()) and kind == "causal_lm":
        raise PretrainedModelError(
            "model.freeze: encoder leaves nothing of this language model to train (its output "
            "layer is tied to the embeddings); use freeze embeddings or lora"
        )
    if model.gradient_checkpointing:
        if not module.supports_gradient_checkpointing:
            raise PretrainedModelError(
                f"model.gradient_checkpointing: {type(module).__name__} does not support it"
            )
        # (transformers 5 names it activation checkpointing.) Not reentrant: frozen inputs
        # and DDP work with it.
        module.activation_checkpointing_enable({"use_reentrant": False})
    return module


def freeze(module: nn.Module, part: str, kind: Kind) -> None:
    """Keep `part` of the base model fixed: "embeddings" (token, position and type
    embeddings), "encoder" (everything; for a causal LM everything but its output layer)."""
    if part == "none":
        return
    base: nn.Module = getattr(module, "base_model", module)
    if part == "encoder":
        targets = [base if kind == "causal_lm" else module]
    else:
        targets = [module.get_input_embeddings()]  # type: ignore[operator]
        for name in ("embeddings", "wpe", "embed_positions"):
            if isinstance(getattr(base, name, None), nn.Module):
                targets.append(getattr(base, name))
    for target in targets:
        target.requires_grad_(False)


def lora_targets(module: nn.Module, lora: LoraSpec, model_type: str) -> list[str]:
    """The spec's target modules, else peft's defaults for the model type."""
    if lora.target_modules:
        return list(lora.target_modules)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    if model_type in DEFAULTS:
        return list(DEFAULTS[model_type])
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in module.named_modules() if _is_linear(m)})
    raise PretrainedModelError(
        f"model.lora.target_modules: peft has no default for {model_type}; name the layers "
        f"to adapt, from: {', '.join(linear[:20])}"
    )


def _is_linear(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or type(layer).__name__ == "Conv1D"


def add_lora(module: nn.Module, lora: LoraSpec, model_type: str) -> None:
    """LoRA adapters on the target layers; the base model's own weights no longer train."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_targets(module, lora, model_type)
    # GPT-2's Conv1D layers store their weight transposed (in, out): peft must know.
    transposed = any(
        type(layer).__name__ == "Conv1D"
        for name, layer in module.named_modules()
        if name.rsplit(".", 1)[-1] in targets
    )
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # a float scales as well
        lora_dropout=lora.dropout,
        target_modules=targets,
        fan_in_fan_out=transposed,
        bias="none",
    )
    try:
        inject_adapter_in_model(config, module)
    except ValueError as error:
        raise PretrainedModelError(f"model.lora.target_modules: {error}") from error
    # peft froze every weight of the base model; keep exactly the adapters trainable.
    for name, parameter in module.named_parameters():
        parameter.requires_grad_("lora_" in name)


def attention_mask(
    tokens: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(padding (B, T) True at pads, the model's attention mask (B, T) 1 on real tokens).
    Pads are id 0, which may be a real token of the model: only the mask tells them apart."""
    padding = padding_mask(lengths.to(tokens.device), tokens.size(1))
    return padding, (~padding).long()


class PretrainedEncoder(nn.Module):
    """A base model's last hidden states, with the contract of our encoders (encoders.py)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        config: Any = backbone.config
        self.width = int(config.hidden_size)

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, states: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        padding, mask = attention_mask(tokens, lengths)
        out = self.backbone(input_ids=tokens, attention_mask=mask)
        return out.last_hidden_state, padding, None  # (B, T, D), (B, T)


class PretrainedLanguageModel(nn.Module):
    """A causal LM with its own output layer: (tokens, lengths, targets) -> (logits (B, T, V),
    loss); the targets are the inputs shifted by one already (shared.data.examples)."""

    def __init__(self, backbone: nn.Module, positions: int | None) -> None:
        super().__init__()
        self.backbone = backbone
        # The window generation slides over: the model's positions (None: unbounded).
        self.max_length = positions

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _, mask = attention_mask(tokens, lengths)
        logits = self.backbone(input_ids=tokens, attention_mask=mask, use_cache=False).logits
        if targets is None:
            return logits, None
        loss = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX
        )
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        prompt: list[int],
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[int]:
        """Continue `prompt` by `length` sampled tokens. The model's key/value cache carries
        each step while the text fits its positions; past them the window slides and each
        step reads the last `max_length` tokens afresh."""
        from shared.zoo.lm import sample_next

        device = next(self.parameters()).device
        limit = self.max_length or len(prompt) + length
        ids, cache = list(prompt), None
        for _ in range(length):
            if cache is not None and len(ids) <= limit:
                window = torch.tensor([ids[-1:]], device=device)
            else:
                window, cache = torch.tensor([ids[-limit:]], device=device), None
            out = self.backbone(input_ids=window, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            ids.append(sample_next(out.logits[0, -1], temperature, top_k, generator))
        return ids[len(prompt) :]


def _require(backbone: Path | None) -> Path:
    if backbone is None:
        raise PretrainedModelError(
            "model.pretrained: type pretrained needs its base model's directory, none was given"
        )
    return backbone


def pretrained_encoder(backbone: Path | None, model: ModelSpec) -> PretrainedEncoder:
    """The encoder of a classification or tagging model of type pretrained."""
    return PretrainedEncoder(load_backbone(_require(backbone), model, "encoder"))


def pretrained_language_model(backbone: Path | None, model: ModelSpec) -> PretrainedLanguageModel:
    """The language model of type pretrained: a causal model with its own output layer."""
    path = _require(backbone)
    positions = max_positions(read_config(path))
    return PretrainedLanguageModel(load_backbone(path, model, "causal_lm"), positions)


def pretrained_tokenizer(backbone: Path) -> PretrainedTokenizer:
    """The base model's tokenizer: tokenizer.json, or a fast tokenizer that transformers
    builds from the vocabulary files (never code from the directory)."""
    import tokenizers

    config = read_config(backbone)
    transformers = _transformers()
    try:
        loaded = transformers.AutoTokenizer.from_pretrained(
            str(backbone), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, TypeError) as error:
        raise PretrainedModelError(
            f"model.pretrained: its tokenizer cannot load ({error})"
        ) from error
    backend = getattr(loaded, "backend_tokenizer", None)
    if backend is None:
        raise PretrainedModelError(
            "model.pretrained: its tokenizer has no fast (tokenizer.json) form; upload one with "
            "tokenizer.json"
        )
    vocab_size = int(config.get("vocab_size") or len(loaded))
    if (ids := backend.get_vocab_size(with_added_tokens=True)) > vocab_size:
        raise PretrainedModelError(
            f"model.pretrained: its tokenizer has {ids:,} ids but the model embeds only "
            f"{vocab_size:,} (config.json's vocab_size); upload a matching tokenizer"
        )
    return PretrainedTokenizer(
        tokenizers.Tokenizer.from_str(backend.to_str()),  # a copy: we change its settings
        vocab_size,
        loaded.bos_token_id,
        loaded.eos_token_id,
        loaded.unk_token_id,
    )
