"""The device and the process group, decided once per trainer process: which device a rank
trains on, joining torchrun's group, and the few collectives the loop needs (each a no-op
for a single process)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from shared.data.examples import Batch


def pick_device() -> torch.device:
    # Chosen in the trainer child only: the worker process never touches CUDA. Under
    # torchrun each rank takes the GPU of its LOCAL_RANK.
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def rank_and_world() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless a process group is up (torchrun, or a test)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> bool:
    """Join the process group torchrun describes in RANK / WORLD_SIZE / MASTER_ADDR (NCCL on
    GPUs, gloo on CPUs); False for a single-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    device = pick_device()
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return True


def all_reduce_sums(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum each value over the ranks (a no-op for one process)."""
    if rank_and_world()[1] == 1:
        return values
    keys = sorted(values)
    # float64: counts and sums of tens of millions of tokens stay exact.
    summed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    return dict(zip(keys, summed.tolist(), strict=True))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (a no-op for one process)."""
    if rank_and_world()[1] == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: train in fp32)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    return (
        torch.bfloat16 if precision == "bf16" or torch.cuda.is_bf16_supported() else torch.float16
    )


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Copy a CPU batch to the device; to a GPU from pinned memory, without blocking the host."""
    if device.type != "cuda":
        return batch
    tokens, lengths, targets = (t.pin_memory().to(device, non_blocking=True) for t in batch)
    return tokens, lengths, targets


def end_group(code: int) -> None:
    """Tear the process group down together after a successful run: a rank that leaves while
    a peer is still tearing down can abort that peer's gloo threads at exit."""
    if dist.is_initialized() and code == 0:
        dist.barrier()
        dist.destroy_process_group()
