"""The optimizer of both diffusion stages: AdamW, or bitsandbytes' 8-bit AdamW.

8-bit AdamW keeps Adam's two moments in one byte each (block-wise quantised) instead of four:
for the full SD UNet (866M parameters) 1.7 GB instead of 6.9 GB, which is what lets the full
coarse fine-tune and the fine stage fit a 24 GB GPU (see `generation.training.memory`). It runs
on CUDA and, slower, on the CPU.
"""

from __future__ import annotations

import torch

OPTIMIZERS = ("adamw", "adamw8bit")
# Bytes of optimizer state per trained parameter (the memory model reads this table).
STATE_BYTES = {"adamw": 8.0, "adamw8bit": 2.0}


class OptimizerUnavailable(RuntimeError):
    """The optimizer asked for needs a package that is not installed."""


def build_adamw(
    groups: list[dict], name: str, betas: tuple[float, float], weight_decay: float, eps: float
) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} must be one of {OPTIMIZERS}")
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as error:
            raise OptimizerUnavailable(
                "--optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes, or "
                'pip install -e ".[gpu]"); --optimizer adamw uses 4x its state memory'
            ) from error
        return bnb.optim.AdamW8bit(groups, betas=betas, weight_decay=weight_decay, eps=eps)
    return torch.optim.AdamW(groups, betas=betas, weight_decay=weight_decay, eps=eps)
