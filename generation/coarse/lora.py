"""LoRA adapters (peft) on the UNet / text encoder attention, and merging them for saving.

The saved pipeline is always plain diffusers weights: adapters are merged into the base layers
and removed, so `StableDiffusionPipeline.from_pretrained` needs no peft at load time.
"""

from __future__ import annotations

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer

UNET_TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_ENCODER_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj"]


def add_lora(
    model: torch.nn.Module, rank: int, alpha: float | None, target_modules: list[str]
) -> list[torch.nn.Parameter]:
    """Freeze `model`, attach rank-`rank` adapters, return the adapter parameters."""
    model.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        init_lora_weights="gaussian",
        target_modules=target_modules,
    )
    model.add_adapter(config)
    return [param for param in model.parameters() if param.requires_grad]


def has_lora(model: torch.nn.Module) -> bool:
    return any(isinstance(module, BaseTunerLayer) for module in model.modules())


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Merge every LoRA adapter into its base layer and remove it, in place (end of training:
    a copy would hold a second full UNet in memory, 3.5 GB at SD size); returns `model`."""
    from diffusers.utils.peft_utils import recurse_remove_peft_layers

    merged = model
    if not has_lora(merged):
        return merged
    for module in merged.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    recurse_remove_peft_layers(merged)
    for attribute in ("peft_config", "_hf_peft_config_loaded"):
        if hasattr(merged, attribute):
            try:
                delattr(merged, attribute)
            except AttributeError:
                setattr(merged, attribute, False)
    merged.requires_grad_(False)
    return merged
