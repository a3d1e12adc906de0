"""Gradient clipping inside the fused AdamW step (worker.optim.optimizer_step) really clips:
on the fp32 path, and under a GradScaler with fp16 autocast (on the CPU too), where it rides
on the optimizer's `grad_scale` attribute that GradScaler.step manages itself.

Each case is checked against the plain way: clip_grad_norm_ and a non-fused AdamW step.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from worker.optim import optimizer_step

MAX_NORM = 0.5


def model_and_batch(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    inputs = torch.randn(32, 8) * 4
    targets = torch.randint(0, 3, (32,))
    return model, inputs, targets


def loss_of(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, fp16: bool):
    with torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
        logits = model(inputs)
    # A large loss: the gradients' norm is far above MAX_NORM, so clipping changes the step.
    return nn.functional.cross_entropy(logits.float(), targets) * 50


def fused_steps(fp16: bool, steps: int, max_norm: float | None) -> tuple[list[float], nn.Module]:
    model, inputs, targets = model_and_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, enabled=fp16)
    norms = []
    for _ in range(steps):
        norms.append(
            optimizer_step(loss_of(model, inputs, targets, fp16), optimizer, scaler, max_norm)
        )
        assert not hasattr(optimizer, "grad_scale")
    return norms, model


def plain_steps(fp16: bool, steps: int, max_norm: float | None) -> tuple[list[float], nn.Module]:
    model, inputs, targets = model_and_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, foreach=False)
    norms = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_of(model, inputs, targets, fp16).backward()
        if max_norm:
            norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), max_norm)))
        else:
            grads = [p.grad for p in model.parameters()]
            norms.append(float(nn.utils.get_total_norm(grads)))
        optimizer.step()
    return norms, model


def assert_same_weights(a: nn.Module, b: nn.Module, atol: float) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16-gradscaler"])
def test_the_fused_step_clips_like_clip_grad_norm(fp16):
    norms, fused = fused_steps(fp16, steps=5, max_norm=MAX_NORM)
    reference_norms, reference = plain_steps(fp16, steps=5, max_norm=MAX_NORM)
    assert min(norms) > 10 * MAX_NORM  # every step needed clipping
    # The reported norm is the unscaled gradients' norm, before clipping.
    torch.testing.assert_close(
        torch.tensor(norms), torch.tensor(reference_norms), rtol=1e-4, atol=0
    )
    assert_same_weights(fused, reference, atol=1e-5)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16-gradscaler"])
def test_without_clipping_the_same_steps_differ(fp16):
    """The comparison above can fail: unclipped steps end elsewhere."""
    _, fused = fused_steps(fp16, steps=5, max_norm=MAX_NORM)
    _, unclipped = plain_steps(fp16, steps=5, max_norm=None)
    _, fused_unclipped = fused_steps(fp16, steps=5, max_norm=None)
    assert_same_weights(fused_unclipped, unclipped, atol=1e-5)
    with pytest.raises(AssertionError):
        assert_same_weights(fused, unclipped, atol=1e-3)


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_backs_off():
    model, inputs, targets = model_and_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = loss_of(model, inputs, targets, fp16=True) * float("inf")
    optimizer_step(loss, optimizer, scaler, MAX_NORM)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert scaler.get_scale() == 2.0**11
    assert not hasattr(optimizer, "grad_scale")
