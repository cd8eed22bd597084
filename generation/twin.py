"""A random-weight Stable Diffusion folder with a published architecture, built offline.

Real-size checks need a model of Stable Diffusion's size, and no weights can be downloaded
here. The twin has the published architecture (the configs of SD 1.5, SD 2.1-base and SD 2.1)
with random weights, saved as a diffusers folder that `StableDiffusionPipeline.from_pretrained`
loads like the user's own. `width_divisor` scales every width (same topology, channels / N)
for tests that run the pretrained-folder code path through every stage on the CPU.

    python -m generation.twin --arch sd21base --out runs/twin-sd21base [--dtype fp16]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from generation.tokenizer import MODEL_MAX_LENGTH, build_clip_tokenizer


@dataclass(frozen=True)
class TwinArchitecture:
    """What distinguishes the published Stable Diffusion releases (diffusers config values)."""

    unet_heads: tuple[int, ...] | int  # SD 2.x passes head counts as `attention_head_dim`
    cross_attention_dim: int
    use_linear_projection: bool
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    text_activation: str
    text_projection: int
    resolution: int
    prediction_type: str
    scheduler: str
    pad_with_eos: bool  # SD 1.x pads with <|endoftext|>, SD 2.x with "!" (id 0)
    unet_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    norm_groups: int = 32


ARCHITECTURES = {
    "sd15": TwinArchitecture(8, 768, False, 768, 12, 12, 3072, "quick_gelu", 768, 512,
                             "epsilon", "pndm", True),
    "sd21base": TwinArchitecture((5, 10, 20, 20), 1024, True, 1024, 23, 16, 4096, "gelu", 512,
                                 512, "epsilon", "pndm", False),
    "sd21": TwinArchitecture((5, 10, 20, 20), 1024, True, 1024, 23, 16, 4096, "gelu", 512,
                             768, "v_prediction", "ddim", False),
}  # fmt: skip
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def group_count(widths: list[int], preferred: int) -> int:
    """The largest group count <= preferred that divides every width (GroupNorm's rule)."""
    common = math.gcd(*widths)
    return max(g for g in range(1, preferred + 1) if common % g == 0)


def build_twin_pipeline(arch: str, width_divisor: int = 1) -> StableDiffusionPipeline:
    """Random weights (seed torch first for reproducible ones), published topology."""
    spec = ARCHITECTURES[arch]
    scale = int(width_divisor)
    unet_channels = [c // scale for c in spec.unet_channels]
    vae_channels = [c // scale for c in spec.vae_channels]
    text_hidden = spec.text_hidden // scale
    cross = spec.cross_attention_dim // scale
    unet_groups = group_count(unet_channels, spec.norm_groups)
    heads = spec.unet_heads if scale == 1 or isinstance(spec.unet_heads, tuple) else 8
    tokenizer = build_clip_tokenizer()
    if spec.pad_with_eos:
        tokenizer.pad_token = tokenizer.eos_token
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_hidden,
            intermediate_size=spec.text_intermediate // scale,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=spec.text_heads,
            max_position_embeddings=MODEL_MAX_LENGTH,
            hidden_act=spec.text_activation,
            projection_dim=spec.text_projection // scale,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=spec.resolution // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=tuple(unet_channels),
        layers_per_block=2,
        attention_head_dim=heads,
        cross_attention_dim=cross,
        use_linear_projection=spec.use_linear_projection,
        norm_num_groups=unet_groups,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=tuple(vae_channels),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=group_count(vae_channels, spec.norm_groups),
        sample_size=spec.resolution,
        scaling_factor=0.18215,
    )
    options = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=spec.prediction_type,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    if spec.scheduler == "pndm":
        scheduler = PNDMScheduler(skip_prk_steps=True, **options)
    else:
        scheduler = DDIMScheduler(clip_sample=False, **options)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def parameter_counts(pipeline: StableDiffusionPipeline) -> dict[str, int]:
    return {
        name: sum(p.numel() for p in getattr(pipeline, name).parameters())
        for name in ("unet", "text_encoder", "vae")
    }


def write_twin(
    arch: str,
    out: str | Path,
    dtype: str = "fp32",
    width_divisor: int = 1,
    seed: int = 0,
) -> dict[str, int]:
    """Write the twin folder; returns its parameter counts per component."""
    torch.manual_seed(seed)
    pipeline = build_twin_pipeline(arch, width_divisor)
    counts = parameter_counts(pipeline)
    pipeline.to(dtype=DTYPES[dtype])
    pipeline.save_pretrained(Path(out), safe_serialization=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generation.twin", description=__doc__)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--width-divisor", type=int, default=1, help="channels / N (tests)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = write_twin(args.arch, args.out, args.dtype, args.width_divisor, args.seed)
    for name, count in counts.items():
        print(f"{name}: {count / 1e6:.1f}M parameters")
    print(f"twin written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
