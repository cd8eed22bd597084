"""Does the trained UNet read the prompt? Denoising loss with each image's own prompt vs another
image's prompt vs the empty prompt, same noise, at several timesteps.

A UNet that ignores its text scores the same with any prompt (relative gain ~0); the gain is
largest at the middle timesteps, where the nodule's layout is decided.

    python -m benchmarks.coarse_text_usage --pipeline COARSE_OUT --data TRAIN_ONLY
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from generation.coarse.data import load_coarse_dataset
from generation.models import load_pipeline
from generation.offline import enforce_offline

TIMESTEPS = (50, 200, 400, 600, 800, 950)


@torch.no_grad()
def text_usage(folder: str, data: str, n: int = 96, seed: int = 0, batch: int = 32) -> dict:
    run = json.loads((Path(folder) / "tiger_coarse.json").read_text())["config"]
    pipe = load_pipeline(folder)
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    dataset = load_coarse_dataset(data, resolution, run["prompt_background"])
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(dataset), generator=generator)[:n].tolist()
    others = chosen[1:] + chosen[:1]  # each image gets its neighbour's prompt
    pixels = dataset.load_pixels(chosen)
    latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor

    def embed(prompts: list[str]) -> torch.Tensor:
        ids = pipe.tokenizer(
            prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        return pipe.text_encoder(ids)[0]

    prompts = {
        "own": embed([dataset.prompts[i] for i in chosen]),
        "other": embed([dataset.prompts[i] for i in others]),
        "empty": embed([""] * len(chosen)),
    }
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    rows = {}
    for t in TIMESTEPS:
        noise = torch.randn(latents.shape, generator=generator)
        steps = torch.full((len(chosen),), t)
        noisy = scheduler.add_noise(latents, noise, steps)
        losses = {}
        for name, hidden in prompts.items():
            prediction = torch.cat(
                [
                    pipe.unet(
                        noisy[i : i + batch], steps[i : i + batch], hidden[i : i + batch]
                    ).sample
                    for i in range(0, len(chosen), batch)
                ]
            )
            losses[name] = float(((prediction - noise) ** 2).mean())
        losses["relative_gain_own_vs_other"] = (losses["other"] - losses["own"]) / losses["other"]
        rows[str(t)] = losses
    return {"pipeline": folder, "images": n, "mse_by_timestep": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", nargs="+", required=True)
    parser.add_argument("--data", required=True, help="the dataset the pipeline was trained on")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    enforce_offline(args.out.parent if args.out else Path(args.pipeline[0]))
    result = {folder: text_usage(folder, args.data) for folder in args.pipeline}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
