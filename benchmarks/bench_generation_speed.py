"""Images per second: our generation engine vs diffusers' stock StableDiffusionControlNetPipeline.

Same model (the fine folder's coarse SD + its two ControlNet branches; the stock pipeline gets
them as a MultiControlNetModel, which sums residuals like our "sum" fusion), same resolution,
scheduler (DPM-Solver++ multistep), steps, guidance scale, threads and device. Ours: the full
engine (batched CFG, per-image generators, mask drawing, PNG + provenance writes). Stock: one
image per call, its defaults otherwise, images kept in memory. The two alternate `--repeats`
times; medians and the ratio ours/stock are reported.

    python benchmarks/bench_generation_speed.py --out benchmarks/results/generation_speed.json
    python benchmarks/bench_generation_speed.py --model runs/fine --data DATA --images 32
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build_standin(folder: Path) -> Path:
    """The tiny default SD (random weights) + fresh branches: speed does not depend on weights."""
    from generation.fine.pipeline import TigerFinePipeline
    from generation.models import build_tiny_pipeline

    torch.manual_seed(0)
    build_tiny_pipeline().save_pretrained(folder / "sd")
    return TigerFinePipeline.from_coarse(folder / "sd").save_pretrained(folder / "fine")


def stock_pipeline(pipe):
    from diffusers import StableDiffusionControlNetPipeline
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    stock = StableDiffusionControlNetPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        controlnet=MultiControlNetModel(
            [pipe.controlnet.controlnet_fg, pipe.controlnet.controlnet_bg]
        ),
        scheduler=pipe.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    stock.set_progress_bar_config(disable=True)
    return stock


def time_stock(stock, jobs, args, resolution: int) -> float:
    from PIL import Image

    from generation.coarse.prompts import combine_prompt
    from generation.inference.masks import MaskBank, mask_image

    bank: MaskBank = args.bank
    started = time.perf_counter()
    for job in jobs:
        mask = mask_image(bank.draw(job.mask_request or {}, job.mask_seed).mask)
        with Image.open(job.condition_BG) as background:
            bg = background.convert("RGB")
        stock(
            prompt=combine_prompt(job.text_nd, job.text_bg, "full"),
            image=[mask, bg],
            height=resolution,
            width=resolution,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(job.seed),
        )
    return time.perf_counter() - started


def time_ours(pipe, jobs, args, source, resolution: int) -> float:
    from generation.inference.engine import (
        GenerationEngine,
        RunIdentity,
        RuntimeConfig,
        SamplingConfig,
    )

    sampling = SamplingConfig(num_inference_steps=args.steps, guidance_scale=args.guidance_scale)
    runtime = RuntimeConfig(batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as scratch:
        identity = RunIdentity("bench", "sha256:bench", "diversify", args.label, 0, {})
        engine = GenerationEngine(pipe, scratch, identity, sampling, runtime, args.bank)
        started = time.perf_counter()
        engine.run(jobs)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="fine folder (default: tiny stand-in)")
    parser.add_argument("--data", default=None, help="dataset (default: a 60-image phantom)")
    parser.add_argument("--label", default="FTC")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/generation_speed.json")
    args = parser.parse_args()

    from generation.fine.pipeline import TigerFinePipeline
    from generation.inference.attributes import AttributeConstraints
    from generation.inference.masks import MaskBank
    from generation.inference.plan import plan_diversify
    from generation.inference.prompts import PromptConfig
    from generation.inference.sources import load_train_source
    from generation.offline import enforce_offline
    from metadata.splits import SplitConfig

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        enforce_offline(scratch)
        model = Path(args.model) if args.model else build_standin(scratch)
        data = args.data
        if data is None:
            from metadata.importers.phantom import build_phantom_dataset
            from metadata.phantom import PhantomConfig

            prevalence = {"benign": 0.5, "PTC": 0.2, "FTC": 0.15, "MTC": 0.15}
            build_phantom_dataset(scratch / "data", 60, config=PhantomConfig(prevalence=prevalence))
            data = scratch / "data"
        pipe = TigerFinePipeline.from_pretrained(model).use_scheduler("dpm++")
        pipe.set_progress_bar_config(disable=True)
        resolution = pipe.default_resolution()
        source = load_train_source(data, split_config=SplitConfig())  # the exporter's default
        args.bank = MaskBank(source, resolution)
        jobs = plan_diversify(
            source, args.label, args.images, 0, AttributeConstraints(), PromptConfig()
        )
        stock = stock_pipeline(pipe)
        # Warm-up both paths once (kernel selection, allocator) before timing.
        time_ours(pipe, jobs[:2], args, source, resolution)
        time_stock(stock, jobs[:1], args, resolution)
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(args.images / time_ours(pipe, jobs, args, source, resolution))
            theirs.append(args.images / time_stock(stock, jobs, args, resolution))
    result = {
        "ours_images_per_s": statistics.median(ours),
        "stock_images_per_s": statistics.median(theirs),
        "ratio_ours_over_stock": statistics.median(ours) / statistics.median(theirs),
        "ours_runs": ours,
        "stock_runs": theirs,
        "settings": {
            "model": str(args.model or "tiny default stand-in (random weights)"),
            "resolution": resolution,
            "images": args.images,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "guidance_scale": args.guidance_scale,
            "scheduler": "dpm++",
            "threads": args.threads,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "machine": platform.processor() or platform.machine(),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
