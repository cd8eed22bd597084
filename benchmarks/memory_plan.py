"""The memory plan (generation.training.memory) for the gpu profile at 512 px, and its check
against the peaks measured on the CPU (benchmarks/results/real_scale_cpu.json).

Counts come from the SD 2.1-base twin built on the meta device (no memory, no weights):
coarse full fine-tune, coarse LoRA, fine (both ControlNet branches), with AdamW or 8-bit AdamW.
Writes benchmarks/results/memory_plan.json.

    python -m benchmarks.memory_plan [--arch sd21base] [--measured RESULTS/real_scale_cpu.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from generation.coarse.config import PROFILES as COARSE_PROFILES
from generation.fine.config import PROFILES as FINE_PROFILES
from generation.fine.model import DualControlNetModel
from generation.training.memory import GIB, training_plan
from generation.twin import build_twin_pipeline
from metadata.atomic import write_json

GPU_SIZES_GB = (16, 24, 32, 40, 48, 80, 141)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def lora_parameters(unet: torch.nn.Module, rank: int) -> int:
    """Rank-r adapters on every attention projection (coarse.lora.UNET_TARGET_MODULES)."""
    total = 0
    for name, module in unet.named_modules():
        if name.endswith(LORA_TARGETS) and isinstance(module, torch.nn.Linear):
            total += rank * (module.in_features + module.out_features)
    return total


def model_counts(arch: str) -> dict[str, int]:
    with torch.device("meta"):
        pipeline = build_twin_pipeline(arch)
        dual = DualControlNetModel.from_unet(pipeline.unet, 8, "gate")
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return {
        "unet": count(pipeline.unet),
        "text_encoder": count(pipeline.text_encoder),
        "vae": count(pipeline.vae),
        "branches": sum(p.numel() for p in dual.trainable_parameters()),
        "lora": lora_parameters(pipeline.unet, 8),
        "unet_channels": list(pipeline.unet.config.block_out_channels),
    }


def plans(counts: dict, resolution: int, batch: int, half: bool) -> dict:
    """stage name -> MemoryPlan at this resolution and batch (gradient checkpointing on)."""
    frozen_base = counts["text_encoder"] + counts["vae"]
    element = 2 if half else 4
    common = dict(
        weight_bytes=element,
        batch_size=batch,
        unet_channels=counts["unet_channels"],
        latent_size=resolution // 8,
        gradient_checkpointing=True,
        activation_bytes=element,
    )
    out = {}
    for optimizer in ("adamw", "adamw8bit"):
        out[f"coarse full, {optimizer}"] = training_plan(
            "coarse", counts["unet"], frozen_base, optimizer=optimizer, ema_on_device=True,
            **common,
        )  # fmt: skip
        out[f"fine, {optimizer}"] = training_plan(
            "fine", counts["branches"], frozen_base + counts["unet"], optimizer=optimizer,
            ema_on_device=False, branches_factor=2.0, **common,
        )  # fmt: skip
    out["coarse LoRA, adamw"] = training_plan(
        "coarse", counts["lora"], frozen_base + counts["unet"], optimizer="adamw",
        ema_on_device=True, **common,
    )  # fmt: skip
    return out


def gpu_needed(total_bytes: float) -> int | None:
    return next((size for size in GPU_SIZES_GB if total_bytes <= size * 1e9 * 0.95), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="sd21base")
    parser.add_argument("--measured", default="benchmarks/results/real_scale_cpu.json")
    parser.add_argument("--out", default="benchmarks/results/memory_plan.json")
    args = parser.parse_args()
    counts = model_counts(args.arch)
    results: dict = {"model": args.arch, "parameters": counts, "gpu_512px_bf16": {}}
    for batch in (1, 2, 8):  # 2: the gpu profiles; 8: their batch before the lean options
        for name, plan in plans(counts, 512, batch, half=True).items():
            results["gpu_512px_bf16"][f"{name}, batch {batch}"] = {
                **{part: round(value / GIB, 2) for part, value in plan.parts.items()},
                "total_gib": round(plan.total / GIB, 2),
                "gpu_gb_needed": gpu_needed(plan.total),
            }
    measured_file = Path(args.measured)
    if measured_file.is_file():
        measured = json.loads(measured_file.read_text())
        cpu_plans = plans(counts, measured["resolution"], 1, half=False)
        optimizer = measured["optimizer"]
        pairs = {
            "coarse": f"coarse full, {optimizer}",
            "fine": f"fine, {optimizer}",
            "coarse-lora": "coarse LoRA, adamw",
        }
        check = {}
        for stage, plan_name in pairs.items():
            row = measured["stages"].get(stage, {})
            if "peak_rss_gib" not in row:
                continue
            predicted = cpu_plans[plan_name].total / GIB
            check[stage] = {
                "plan": plan_name,
                "predicted_gib": round(predicted, 2),
                "measured_peak_rss_gib": row["peak_rss_gib"],
                "error": round(predicted / row["peak_rss_gib"] - 1, 3),
            }
        results["cpu_check"] = {"resolution": measured["resolution"], "stages": check}
    results["profiles"] = {"coarse": COARSE_PROFILES["gpu"], "fine": FINE_PROFILES["gpu"]}
    write_json(args.out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
