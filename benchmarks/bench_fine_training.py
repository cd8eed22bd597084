"""Our fine-stage trainer vs the plain multi-ControlNet training loop, on the same data.

Ours: cached VAE latents, cached text embeddings (text_nd, text_bg and the UNet prompt), cached
conditions, both branches fused by `DualControlNetModel`. Baseline: diffusers'
`MultiControlNetModel` with the two branches, images and conditions read from disk, VAE and text
encoder run every step (as diffusers' train_controlnet.py does). Same coarse model, batch size,
optimizer and number of trained parameters. Each mode runs in its own subprocess so its peak
memory (RSS on CPU, CUDA max allocated on GPU) is its own; modes alternate `--repeats` times and
the medians are reported, with ratios ours/baseline.

    python benchmarks/bench_fine_training.py --coarse SD_FOLDER --data DATA --out results.json
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
    from generation.fine.config import FineConfig
    from generation.fine.train import train_fine

    stamps: dict[int, float] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        config = FineConfig(
            train_data_dir=args.data,
            output_dir=scratch,
            coarse_model_path=args.coarse,
            all_cases=True,
            resolution=args.resolution,
            train_batch_size=args.batch,
            max_train_steps=args.warmup + args.steps + 1,
            checkpointing_steps=10**9,
            validation_steps=10**9,
            num_validation_items=0,
            report_to="none",
            mixed_precision=args.mixed_precision,
            cpu_threads=args.threads,
        )
        train_fine(config, step_callback=lambda step: stamps.__setitem__(step, time.perf_counter()))
    timed = stamps[args.warmup + args.steps] - stamps[args.warmup]
    return {
        "images_per_second": args.steps * args.batch / timed,
        "wall_seconds_including_setup_and_cache": time.perf_counter() - started,
        "peak_memory_mb": peak_memory_mb(),
    }


def run_baseline(args) -> dict:
    """The plain loop: per-step disk reads, VAE encoding and text encoding; one shared prompt."""
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
    from diffusers.optimization import get_scheduler

    from generation.fine.data import flip_where, load_fine_dataset
    from generation.fine.model import DualControlNetModel
    from generation.models import load_pipeline_components, vae_downsampling
    from generation.training.caching import tokenize_prompts
    from generation.training.loss import diffusion_loss, sample_timesteps, training_target
    from generation.training.randomness import batch_indices, step_generator

    if args.threads and not torch.cuda.is_available():
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.mixed_precision == "bf16" and device.type == "cuda" else None
    started = time.perf_counter()
    components = load_pipeline_components(args.coarse)
    dataset = load_fine_dataset(args.data, args.resolution, "words")
    unet, vae, text_encoder = components.unet, components.vae, components.text_encoder
    for frozen in (unet, vae, text_encoder):
        frozen.requires_grad_(False).to(device, dtype or torch.float32)
    torch.manual_seed(0)
    branches = DualControlNetModel.from_unet(unet, vae_downsampling(vae), "sum").branches
    multi = MultiControlNetModel(list(branches)).to(device).train()
    params = [p for p in multi.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    noise_scheduler = components.noise_scheduler()
    scaling = vae.config.scaling_factor
    stamps = {}
    for step in range(args.warmup + args.steps + 1):
        indices = batch_indices(len(dataset), args.batch, step, 0)
        generator = step_generator(0, step)
        flips = torch.rand(len(indices), generator=generator) < 0.5
        order = indices.tolist()
        pixels = flip_where(dataset.load_pixels(order), flips).to(device)
        fg, bg = (flip_where(c, flips).to(device) for c in dataset.load_conditions(order))
        prompts = [dataset.prompts[i] for i in order]
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(dtype)),
        ):
            latents = vae.encode(pixels.to(vae.dtype)).latent_dist.sample(generator)
            latents = latents.float() * scaling
            ids = tokenize_prompts(components.tokenizer, prompts).to(device)
            hidden = text_encoder(ids, return_dict=False)[0]
        noise = torch.randn(latents.shape, generator=generator).to(device)
        timesteps = sample_timesteps(len(order), noise_scheduler, generator, device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(dtype)):
            down, mid = multi(noisy, timesteps, hidden, [fg, bg], [1.0, 1.0], return_dict=False)
            prediction = unet(
                noisy,
                timesteps,
                hidden,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0]
        target = training_target(noise_scheduler, latents, noise, timesteps)
        loss = diffusion_loss(prediction, target, timesteps, noise_scheduler, 5.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stamps[step + 1] = time.perf_counter()
    timed = stamps[args.warmup + args.steps] - stamps[args.warmup]
    return {
        "images_per_second": args.steps * args.batch / timed,
        "wall_seconds_including_setup_and_cache": time.perf_counter() - started,
        "peak_memory_mb": peak_memory_mb(),
    }


def run_mode(mode: str, args) -> dict:
    command = [sys.executable, __file__, "--mode", mode, *sys.argv[1:]]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--coarse", required=True, help="coarse SD folder")
    parser.add_argument("--data", required=True, help="Tiger dataset folder")
    parser.add_argument("--out", default="benchmarks/results/fine_training.json")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--mixed_precision", default="no")
    parser.add_argument("--mode", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        result = run_ours(args) if args.mode == "ours" else run_baseline(args)
        print(json.dumps(result))
        return
    runs: dict[str, list[dict]] = {"ours": [], "baseline": []}
    for _ in range(args.repeats):
        for mode in ("baseline", "ours"):
            runs[mode].append(run_mode(mode, args))
    summary = {}
    for mode, results in runs.items():
        summary[mode] = {k: statistics.median(r[k] for r in results) for k in results[0]}
    summary["ratio_images_per_second"] = (
        summary["ours"]["images_per_second"] / summary["baseline"]["images_per_second"]
    )
    summary["ratio_peak_memory"] = (
        summary["ours"]["peak_memory_mb"] / summary["baseline"]["peak_memory_mb"]
    )
    summary["settings"] = {
        k: v for k, v in vars(args).items() if k not in ("mode",) and v is not None
    }
    summary["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    summary["runs"] = runs
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
