#!/usr/bin/env bash
# GPU check for a machine with one NVIDIA GPU (H100/H200 targets), under 8 minutes:
#   1. every architecture (rnn, gru, lstm, bilstm, transformer) trains on CUDA through the trainer;
#   2. tokens/s in bf16 of the char-level Transformer LM and the LSTM classifier (the trainer's
#      own metrics; Tiny Shakespeare and SST-2 from ../shared/datasets when present, else the
#      built-in data);
#   3. model FLOPs utilisation of a 12-layer Transformer LM step (bf16 autocast, torch.compile,
#      fused AdamW): 6 N + 12 L d T FLOPs a token (nanoGPT's count) over the GPU's dense bf16 peak
#      (target >= 40% on H100/H200; set PEAK_TFLOPS for other GPUs).
#
#   bench/gpu_check.sh            # from the repository root; prints one JSON object last
#
# Without a CUDA device it says so and exits 2 having measured nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo '{"skipped": "no NVIDIA GPU: nvidia-smi is missing or lists no device"}'
    echo "gpu_check: no NVIDIA GPU on this machine; nothing measured" >&2
    exit 2
fi
exec timeout 470 "$PYTHON" - <<'PY'
import contextlib, json, math, os, sys, time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    print(json.dumps({"skipped": "torch sees no CUDA device (CPU-only build or driver mismatch)"}))
    sys.exit(2)

sys.path.insert(0, os.getcwd())
from shared.dataset_formats import parse_delimited
from shared.spec import parse_spec
from shared.zoo import build_model
from worker.data import Splits
from worker.trainer import Reporter, train

DATA = Path.cwd().parent / "shared" / "datasets"
name = torch.cuda.get_device_name(0)
result = {"gpu": name, "torch": torch.__version__, "bf16": torch.cuda.is_bf16_supported()}
log = sys.stderr


def run(spec, splits=None):
    rows = []
    reporter = Reporter(lambda batch, epoch, step: rows.extend(batch), lambda *a, **k: None)
    started = time.perf_counter()
    with contextlib.redirect_stdout(log):
        out = train(parse_spec(spec), reporter, splits=splits)
    return out, rows, time.perf_counter() - started


def steady(rows, metric):
    values = [r["value"] for r in rows if r["split"] == "train" and r["name"] == metric]
    values = values[1:] or values  # the first window holds the warm-up
    return sum(values) / max(len(values), 1)


# 1. every architecture trains on CUDA
archs = {}
for arch in ("rnn", "gru", "lstm", "bilstm", "transformer"):
    spec = {
        "name": f"gpu-{arch}",
        "model": {"type": arch, "embedding_dim": 64, "hidden_size": 64, "nhead": 4},
        "training": {"epochs": 1, "max_steps": 30, "batch_size": 32, "precision": "bf16", "log_every_steps": 10},
    }
    try:
        out, rows, seconds = run(spec)
        loss = out.metrics.get("train/loss", float("nan"))
        archs[arch] = {"ok": math.isfinite(loss), "train_loss": round(loss, 4), "seconds": round(seconds, 1)}
    except Exception as exc:  # report and go on: one broken architecture must not hide the rest
        archs[arch] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
result["architectures"] = archs

# 2. throughput in bf16 through the trainer
shakespeare = DATA / "tinyshakespeare" / "input.txt"
lm_splits = None
if shakespeare.is_file():
    from shared.dataset_formats import parse_text
    lm_splits = Splits(train=parse_text(shakespeare.read_bytes()))
lm_spec = {
    "name": "gpu-char-lm",
    "task": "language_modeling",
    "data": {"dataset": "builtin:stories", "max_length": 256, "val_fraction": 0.05, "tokenizer": {"kind": "char", "vocab_size": 256}},
    "model": {"type": "transformer", "embedding_dim": 384, "nhead": 6, "num_layers": 6, "dim_feedforward": 1536, "dropout": 0.1},
    "training": {"epochs": 100, "max_steps": 300, "batch_size": 64, "lr": 1e-3, "precision": "bf16", "log_every_steps": 50},
}
try:
    out, rows, seconds = run(lm_spec, lm_splits)
    result["char_transformer_lm"] = {
        "tokens_per_s": round(steady(rows, "tokens_per_s")),
        "data": "tinyshakespeare" if lm_splits else "builtin:stories",
        "val_loss": round(out.metrics.get("val/loss", float("nan")), 4),
        "seconds": round(seconds, 1),
    }
except Exception as exc:
    result["char_transformer_lm"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}

sst2 = DATA / "sst2"
cls_splits = None
if (sst2 / "train.tsv").is_file():
    options = {"delimiter": "\t", "text_column": "sentence", "label_column": "label"}
    cls_splits = Splits(
        train=parse_delimited((sst2 / "train.tsv").read_bytes(), **options),
        validation=parse_delimited((sst2 / "dev.tsv").read_bytes(), **options),
    )
cls_spec = {
    "name": "gpu-lstm",
    "data": {"max_length": 64, "tokenizer": {"kind": "word", "vocab_size": 30000}},
    "model": {"type": "lstm", "embedding_dim": 128, "hidden_size": 512, "dropout": 0.1},
    "training": {"epochs": 1, "max_steps": 300, "batch_size": 256, "precision": "bf16", "log_every_steps": 50},
}
try:
    out, rows, seconds = run(cls_spec, cls_splits)
    result["lstm_classifier"] = {
        "tokens_per_s": round(steady(rows, "tokens_per_s")),
        "samples_per_s": round(steady(rows, "samples_per_s")),
        "data": "sst2" if cls_splits else "builtin:sentiment",
        "seconds": round(seconds, 1),
    }
except Exception as exc:
    result["lstm_classifier"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}

# 3. model FLOPs utilisation: a 12-layer, d=1024 causal Transformer LM, T=1024
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
peak = float(os.environ.get("PEAK_TFLOPS", "0")) * 1e12 or next(
    (v for k, v in PEAKS.items() if k in name), 0.0
)
try:
    torch.backends.cuda.matmul.allow_tf32 = True
    layers, width, heads, length, vocab, batch = 12, 1024, 16, 1024, 256, 16
    mspec = parse_spec({"name": "mfu", "task": "language_modeling", "data": {"max_length": length, "tokenizer": {"kind": "char"}},
                        "model": {"type": "transformer", "embedding_dim": width, "nhead": heads, "num_layers": layers,
                                  "dim_feedforward": 4 * width, "dropout": 0.0}})
    model = build_model(mspec.model, "language_modeling", vocab, 2, length).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    params = sum(p.numel() for p in model.parameters())
    non_embedding = params - vocab * width
    compiled = model
    with contextlib.suppress(Exception):
        compiled = torch.compile(model)
    tokens = torch.randint(2, vocab, (batch, length + 1), device="cuda")
    lengths = torch.full((batch,), length, device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = compiled(tokens[:, :-1], lengths, tokens[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    try:
        for _ in range(3):
            step()
    except Exception as exc:  # compile failed: measure eager
        print(f"torch.compile failed ({type(exc).__name__}); eager", file=log)
        compiled = model
        for _ in range(3):
            step()
    torch.cuda.synchronize()
    timed = 20
    started = time.perf_counter()
    for _ in range(timed):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / timed
    flops_per_token = 6 * non_embedding + 12 * layers * width * length
    achieved = flops_per_token * batch * length / seconds
    result["transformer_mfu"] = {
        "parameters": params,
        "compiled": compiled is not model,
        "tokens_per_s": round(batch * length / seconds),
        "achieved_tflops": round(achieved / 1e12, 1),
        "peak_tflops": round(peak / 1e12, 1) if peak else None,
        "mfu": round(achieved / peak, 3) if peak else None,
        "target": 0.40,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }
except Exception as exc:
    result["transformer_mfu"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}

print(json.dumps(result))
PY
