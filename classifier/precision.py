"""Mixed precision and determinism settings: bf16 (or fp16 with loss scaling) and TF32 on GPU,
fp32 on a CPU unless bf16 is asked for.

CPU bf16 autocast (with channels_last) is opt-in: on this project's CPU (AVX512-BF16) it trained
the quick profile's ResNet-18 arms 1.7x faster, but every arm scored lower on the 2000-frame
independent test set (duplicated real -0.12 [-0.19, -0.06], p = 0.001; real -0.05, filtered
synthetic -0.08), so "auto" keeps fp32 there (benchmarks/bench_classifier_precision.py,
benchmarks/results/classifier_precision_FTC.json)."""

from __future__ import annotations

import os
import random
from contextlib import AbstractContextManager

import numpy as np
import torch


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX tiles: oneDNN then runs bf16 convolutions in hardware."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_mixed_precision(requested: str) -> str:
    """ "auto": bf16 (fp16 on GPUs without bf16) on CUDA, fp32 on a CPU (see the module note)."""
    if requested != "auto":
        return requested
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def accelerate_precision(precision: str, cuda: bool) -> str:
    """What accelerate is given. CPU bf16 is our own autocast (`training_autocast`): accelerate
    keeps one precision per process, and the generation trainers beside us run in fp32."""
    return "no" if precision == "bf16" and not cuda else precision


def training_autocast(accelerator, precision: str) -> AbstractContextManager:
    """The forward pass's autocast: bf16 on a CPU when asked for, else accelerate's."""
    if accelerator.device.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return accelerator.autocast()


def resolve_channels_last(requested: bool | None, device_type: str, mixed_precision: str) -> bool:
    """None: channels_last on CUDA, and on a CPU under bf16 autocast (oneDNN's fast layout);
    fp32 CPU training keeps NCHW, as the runs before bf16 were made."""
    if requested is not None:
        return requested
    return device_type == "cuda" or mixed_precision == "bf16"


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
