"""What a training run will hold in memory, said before it starts, and a refusal when it won't fit.

Fixed state is counted exactly from the models: trained weights (float32), their gradients
(float32), the optimizer's state (`optim.STATE_BYTES`: AdamW 8 B, 8-bit AdamW 2 B per
parameter), the EMA copy (float32, when on the device) and the frozen weights (at the weight
dtype). Activations per image scale with the UNet's feature volume, sum over its levels of
channels x latent area; the coefficients were measured on the SD 2.1-base twin on the CPU
(`benchmarks/real_scale.py`, which also checks the whole plan against each stage's peak).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from generation.training.optim import STATE_BYTES

LOGGER = logging.getLogger(__name__)
GIB = 2**30
# Activation bytes per image per unit of feature volume and byte of element, forward + backward:
# peak RSS above weights and gradients of one step of the SD 2.1-base twin's UNet at 256 px on
# the CPU (0.53 GiB with gradient checkpointing, 0.81 GiB without; benchmarks/activation_probe.py).
ACTIVATION_FACTOR = {"checkpointing": 47.7, "full": 73.6}
RUNTIME_OVERHEAD = 0.6 * GIB  # interpreter, torch, diffusers, allocator slack (an estimate)


class MemoryPlanError(RuntimeError):
    """The run will not fit the device it was asked to run on."""


@dataclass
class MemoryPlan:
    """Bytes by part; `total` is what the run needs at its peak."""

    stage: str
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def table(self) -> str:
        rows = [f"  {name:<12} {value / GIB:7.2f} GiB" for name, value in self.parts.items()]
        return "\n".join(
            [f"{self.stage} memory plan:", *rows, f"  {'total':<12} {self.total / GIB:7.2f} GiB"]
        )


def feature_volume(unet_channels: list[int], latent_size: int, layers_per_block: int = 2) -> float:
    """Sum over the UNet's levels of channels x latent area x blocks (down and up paths)."""
    volume = 0.0
    for level, channels in enumerate(unet_channels):
        side = latent_size / 2**level
        volume += channels * side * side * (2 * layers_per_block + 1)
    return volume


def training_plan(
    stage: str,
    trained: int,
    frozen: int,
    weight_bytes: int,
    optimizer: str,
    ema_on_device: bool,
    batch_size: int,
    unet_channels: list[int],
    latent_size: int,
    gradient_checkpointing: bool,
    activation_bytes: int,
    branches_factor: float = 1.0,
    layers_per_block: int = 2,
) -> MemoryPlan:
    """`branches_factor`: activations relative to the coarse UNet's (fine: UNet + two encoder
    copies, 2.0)."""
    factor = ACTIVATION_FACTOR["checkpointing" if gradient_checkpointing else "full"]
    volume = feature_volume(unet_channels, latent_size, layers_per_block)
    activations = factor * volume * activation_bytes * batch_size * branches_factor
    parts = {
        "weights": 4.0 * trained + weight_bytes * frozen,
        "gradients": 4.0 * trained,
        "optimizer": STATE_BYTES[optimizer] * trained,
        "ema": 4.0 * trained if ema_on_device else 0.0,
        "activations": activations,
        "runtime": RUNTIME_OVERHEAD,
    }
    return MemoryPlan(stage, parts)


def device_capacity(device: torch.device) -> float | None:
    """Total memory of the device the run trains on (CUDA: the GPU's; CPU: the machine's)."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    if device.type == "cpu":
        import psutil

        return float(psutil.virtual_memory().total)
    return None


def check_plan(
    plan: MemoryPlan, device: torch.device, allow_over: bool = False, processes: int = 1
) -> None:
    """Log the plan; refuse (before any training) when it exceeds the device's memory. CPU
    processes share the machine's memory, so there the plan counts once per process."""
    LOGGER.info("%s", plan.table())
    capacity = device_capacity(device)
    if capacity is not None and device.type == "cpu":
        capacity /= max(processes, 1)
    if capacity is None or plan.total <= capacity or allow_over:
        return
    raise MemoryPlanError(
        f"{plan.stage} needs about {plan.total / GIB:.1f} GiB but {device} has "
        f"{capacity / GIB:.1f} GiB:\n{plan.table()}\nLower it with --optimizer adamw8bit, "
        "--gradient_checkpointing true, --use_lora true (coarse), a smaller --train_batch_size "
        "or --resolution; --allow_memory_over true runs anyway"
    )
