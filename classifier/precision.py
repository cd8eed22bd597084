"""Mixed precision and determinism settings: bf16 (or fp16 with loss scaling) and TF32 on GPU,
full fp32 on CPU, where autocast would only slow training down."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def resolve_mixed_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Same seed, same run: Python, NumPy and torch RNGs, deterministic kernels where they exist."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    if deterministic and torch.cuda.is_available():  # CPU kernels used here are deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
