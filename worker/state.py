"""The training loop's state as one object: where the run is (epoch, step, next batch of the
epoch, the global batch its order was cut with), what early stopping tracks (best value,
evaluations without improvement), and the RNG states. A checkpoint is its `state_dict`
beside the model's, the optimizer's and the scheduler's."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shared.spec import JobSpec


@dataclass
class TrainState:
    global_batch: int  # examples per optimizer step, over every rank
    world_size: int = 1
    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    next_batch: int = 0  # the index, in this epoch's batch order, of the next batch to train
    best: float | None = None  # the best validation value of the task's selection metric
    stale: int = 0  # evaluations since it last improved
    # The global batch the saved position was cut with; another one (resumed on another
    # number of devices) re-cuts the rest of that epoch.
    saved_batch: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": rng_state(),
            "epoch": self.epoch,
            "next_batch": self.next_batch,
            "step": self.step,
            "global_batch": self.global_batch,
            "world_size": self.world_size,
            "best": self.best,
            "stale": self.stale,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (restores the RNGs too)."""
        set_rng_state(saved["rng"])
        self.epoch, self.next_batch, self.step = saved["epoch"], saved["next_batch"], saved["step"]
        self.best, self.stale = saved["best"], saved["stale"]
        self.saved_batch = int(saved.get("global_batch", self.global_batch // self.world_size))

    def recut(self) -> bool:
        """Whether the epoch being resumed was cut into global batches of another size."""
        return bool(self.next_batch) and self.saved_batch not in (None, self.global_batch)


def rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            saved["keys"].numpy().astype(np.uint32),
            saved["pos"],
            saved["has_gauss"],
            saved["gauss"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(spec: JobSpec) -> None:
    """Seed Python, NumPy and torch from the spec (and pick deterministic kernels if asked)."""
    cfg = spec.training
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
