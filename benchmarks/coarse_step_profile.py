"""Where one coarse training step spends its time, part by part (the anchor benchmark's setup).

What caching can save is the VAE encode and the text encode; the UNet's forward, backward and
optimizer step are left whatever the trainer does. This prints each part's median seconds per
step over `--repeats` steps on the pipeline folder `bench_anchor_coarse` builds, so the
ceiling of a cache-based speed-up is measured, not guessed: (all parts) / (UNet parts).

    python -m benchmarks.coarse_step_profile --pipeline runs/anchor_coarse/tiny_sd
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def timed(function, repeats: int) -> tuple[float, object]:
    values, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        values.append(time.perf_counter() - started)
    return statistics.median(values), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipeline", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/coarse_step_profile.json")
    )
    args = parser.parse_args()
    from generation.models import load_pipeline_components

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    parts = load_pipeline_components(args.pipeline)
    unet, vae, text_encoder = parts.unet.train(), parts.vae.eval(), parts.text_encoder.eval()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    pixels = torch.rand(args.batch, 3, args.resolution, args.resolution) * 2 - 1
    ids = parts.tokenizer(
        ["benign, solid, hypoechoic, wider-than-tall, smooth margins"] * args.batch,
        padding="max_length", max_length=parts.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids  # fmt: skip
    with torch.no_grad():
        vae_s, latents = timed(lambda: vae.encode(pixels).latent_dist.sample(), args.repeats)
        text_s, hidden = timed(lambda: text_encoder(ids, return_dict=False)[0], args.repeats)
    timesteps = torch.randint(0, 1000, (args.batch,))
    noise = torch.randn_like(latents)

    def forward():
        return F.mse_loss(unet(latents + noise, timesteps, hidden).sample, noise)

    forward_s, _ = timed(forward, args.repeats)

    def backward():
        loss = forward()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)

    forward_backward_s, _ = timed(backward, args.repeats)

    def step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_s, _ = timed(lambda: (backward(), step()), args.repeats)
    unet_s = step_s  # forward + backward + clipping + AdamW
    result = {
        "seconds_per_step": {
            "vae_encode": vae_s,
            "text_encode": text_s,
            "unet_forward": forward_s,
            "unet_forward_backward_clip": forward_backward_s,
            "unet_forward_backward_clip_adamw": unet_s,
        },
        "cache_ceiling_speedup": (vae_s + text_s + unet_s) / unet_s,
        "setup": {
            "batch": args.batch,
            "resolution": args.resolution,
            "threads": args.threads,
            "unet_parameters": sum(p.numel() for p in unet.parameters()),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
