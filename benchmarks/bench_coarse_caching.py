"""Our coarse trainer (latents and text embeddings cached) vs a naive loop that loads, encodes
images and encodes text every step, as diffusers' `train_text_to_image.py` example does.

Same model (a pipeline folder with frozen VAE and text encoder, UNet trained fully), same data,
same batch size and optimizer. Each mode runs in its own subprocess so peak memory (RSS on CPU,
CUDA max allocated on GPU) is its own; modes alternate `--repeats` times and the medians are
reported, with ratios ours/naive.

    python benchmarks/bench_coarse_caching.py --pipeline RUN --data DATA --out results.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(args) -> dict:
    from generation.coarse.config import CoarseConfig
    from generation.coarse.train import train_coarse

    stamps: dict[int, float] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        config = CoarseConfig(
            train_data_dir=args.data,
            output_dir=scratch,
            pretrained_model_name_or_path=args.pipeline,
            all_cases=True,
            train_text_encoder=False,
            train_batch_size=args.batch,
            max_train_steps=args.warmup + args.steps,
            checkpointing_steps=10**9,
            validation_steps=10**9,
            validation_prompts=[],
            use_ema=False,
            report_to="none",
            mixed_precision=args.mixed_precision,
        )
        train_coarse(
            config, step_callback=lambda step: stamps.__setitem__(step, time.perf_counter())
        )
    timed = stamps[args.warmup + args.steps] - stamps[args.warmup]
    return {
        "images_per_second": args.steps * args.batch / timed,
        "wall_seconds_including_setup_and_cache": time.perf_counter() - started,
        "peak_memory_mb": peak_memory_mb(),
    }


def run_naive(args) -> dict:
    """diffusers' example loop: per step, read + transform images, VAE encode, text encode."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from generation.coarse.data import load_coarse_dataset
    from generation.models import load_pipeline_components, vae_downsampling

    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    parts = load_pipeline_components(args.pipeline)
    resolution = parts.unet.config.sample_size * vae_downsampling(parts.vae)
    dataset = load_coarse_dataset(args.data, resolution, "full")
    vae, text_encoder, unet = parts.vae.to(device), parts.text_encoder.to(device), parts.unet
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.to(device).train()
    scheduler = DDPMScheduler.from_config(parts.scheduler.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(0)
    stamps = []
    for _ in range(args.warmup + args.steps):
        indices = torch.randperm(len(dataset), generator=generator)[: args.batch].tolist()
        pixels = dataset.load_pixels(indices)
        flips = torch.rand(args.batch, generator=generator) < 0.5
        pixels = torch.where(flips[:, None, None, None], pixels.flip(-1), pixels).to(device)
        ids = parts.tokenizer(
            [dataset.prompts[i] for i in indices],
            padding="max_length",
            max_length=parts.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        hidden = text_encoder(ids, return_dict=False)[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (args.batch,), device=device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        loss = F.mse_loss(unet(noisy, timesteps, hidden).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    timed = stamps[-1] - stamps[args.warmup - 1]
    return {
        "images_per_second": args.steps * args.batch / timed,
        "wall_seconds_including_setup_and_cache": time.perf_counter() - started,
        "peak_memory_mb": peak_memory_mb(),
    }


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", required=True, help="diffusers SD folder (frozen VAE/text)")
    parser.add_argument("--data", required=True, help="dataset ROOT")
    parser.add_argument("--out", help="results JSON path")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mixed_precision", default="no")
    parser.add_argument("--mode", choices=("ours", "naive"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.mode:
        result = run_ours(args) if args.mode == "ours" else run_naive(args)
        print("RESULT " + json.dumps(result))
        return result
    runs: dict[str, list[dict]] = {"ours": [], "naive": []}
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    for _ in range(args.repeats):
        for mode in ("naive", "ours"):
            done = subprocess.run(
                [sys.executable, __file__, *forwarded, "--mode", mode],
                capture_output=True,
                text=True,
                check=True,
            )
            line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
            runs[mode].append(json.loads(line[len("RESULT ") :]))
    summary = {
        mode: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for mode, results in runs.items()
    }
    summary["ratio_ours_over_naive"] = {
        "images_per_second": summary["ours"]["images_per_second"]
        / summary["naive"]["images_per_second"],
        "peak_memory_mb": summary["ours"]["peak_memory_mb"] / summary["naive"]["peak_memory_mb"],
    }
    summary["setup"] = {
        "pipeline": args.pipeline,
        "data": args.data,
        "batch": args.batch,
        "timed_steps": args.steps,
        "repeats": args.repeats,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
    }
    text = json.dumps(summary, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return summary


if __name__ == "__main__":
    main()
