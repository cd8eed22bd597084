"""Activation memory of one UNet training step (forward + backward), measured by peak RSS.

Loads the UNet of a diffusers folder, runs one step at the given resolution and batch with and
without gradient checkpointing in fresh processes, and reports the peak RSS above the weights and
gradients, per image, and per unit of the UNet's feature volume (what
`generation.training.memory.ACTIVATION_FACTOR` holds).

    python -m benchmarks.activation_probe --model TWIN --resolution 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time


def measure(model: str, resolution: int, batch: int, checkpointing: bool) -> dict:
    import psutil
    import torch
    from diffusers import UNet2DConditionModel

    from generation.training.memory import feature_volume

    torch.set_num_threads(2)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", local_files_only=True)
    unet.train().requires_grad_(True)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    latent = resolution // 8
    sample = torch.randn(batch, 4, latent, latent)
    hidden = torch.randn(batch, 77, unet.config.cross_attention_dim)
    timesteps = torch.full((batch,), 500)
    process = psutil.Process()
    # Gradients first (as they are after the first step), so the peak above is activations.
    for param in unet.parameters():  # written, so the pages are resident (zeros are lazy)
        param.grad = param.detach().clone()
    base = process.memory_info().rss
    peak = base
    stop = threading.Event()

    def sample_rss() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    started = time.perf_counter()
    loss = unet(sample, timesteps, hidden).sample.float().pow(2).mean()
    loss.backward()
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    activations = peak - base
    volume = feature_volume(list(unet.config.block_out_channels), latent)
    return {
        "resolution": resolution,
        "batch": batch,
        "gradient_checkpointing": checkpointing,
        "activation_gib": round(activations / 2**30, 3),
        "factor": round(activations / (volume * 4 * batch), 2),
        "seconds_forward_backward": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--one", choices=("checkpointing", "full"), default=None)
    args = parser.parse_args()
    if args.one:
        print(
            json.dumps(
                measure(args.model, args.resolution, args.batch, args.one == "checkpointing")
            )
        )
        return
    results = []
    for kind in ("checkpointing", "full"):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.activation_probe", "--model", args.model,
             "--resolution", str(args.resolution), "--batch", str(args.batch), "--one", kind],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
