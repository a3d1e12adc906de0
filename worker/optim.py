"""The optimizer's side of a step: the learning-rate schedule, and backward, clipping and the
fused AdamW step (through a GradScaler when fp16 autocast needs one)."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from shared.spec import JobSpec


def lr_factor(step: int, total_steps: int, warmup: int, kind: str) -> float:
    """Linear warmup, then cosine or linear decay to 10% (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if kind == "linear":
        return 1.0 - 0.9 * progress
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer_step(
    objective: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    max_norm: float | None,
) -> float:
    """Backward, clip to `max_norm` and step (through `scaler` when it is enabled); returns
    the gradients' global L2 norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(objective).backward()
    scaler.unscale_(optimizer)
    grad_norm = clip_in_step(optimizer, max_norm)
    scaler.step(optimizer)
    with contextlib.suppress(AttributeError):
        del optimizer.grad_scale  # type: ignore[attr-defined]  # set by clip_in_step
    scaler.update()
    return grad_norm


def clip_in_step(optimizer: torch.optim.Optimizer, max_norm: float | None) -> float:
    """The gradients' global L2 norm; clips them to `max_norm` inside the optimizer's step.

    The fused AdamW kernel divides each gradient by `optimizer.grad_scale` as it reads it
    (the hook GradScaler uses), so a scale of max(1, norm / max_norm) clips without the
    extra pass over every gradient that `clip_grad_norm_` makes: on CPUs, where a large
    embedding's gradient dominates a small model's step, that pass is a fifth of the step.
    Under an enabled GradScaler the gradients are unscaled first (`unscale_`), and its step
    then keeps this scale as it is (tests/test_clipping.py checks both paths). The caller
    deletes `optimizer.grad_scale` after the step.
    """
    grads = [
        p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
    ]
    norm = nn.utils.get_total_norm(grads)
    if max_norm and optimizer.defaults.get("fused"):
        optimizer.grad_scale = torch.clamp(norm / max_norm, min=1.0)  # type: ignore[attr-defined]
    elif max_norm:
        nn.utils.clip_grads_with_norm_(grads, max_norm, norm)
    return float(norm)


def warmup_steps(spec: JobSpec, total_steps: int) -> int:
    """The warmup's length: `warmup_steps`, else `warmup_ratio` of all steps, else 5% of
    them (at most 200)."""
    cfg = spec.training
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    if cfg.warmup_ratio is not None:
        return max(1, round(total_steps * cfg.warmup_ratio))
    return max(1, min(200, total_steps // 20))


def optimization(
    spec: JobSpec, model: nn.Module, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the parameters that train, and its warmup-then-decay schedule."""
    cfg = spec.training
    # The fused kernel updates every parameter in one pass: several times faster than the
    # per-tensor loop on CPUs, where the optimizer step is a large share of a small model's step.
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    warmup = warmup_steps(spec, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, cfg.scheduler)
    )
    return optimizer, scheduler
