"""Coarse training: ours against diffusers' own `examples/text_to_image/train_text_to_image.py`.

The script is the one users run today without Tiger. Both train the same UNet from the same
pipeline folder (random weights, the built-in tiny architecture saved with save_pretrained)
on the same images and captions (the phantom's `text_nd` + `text_bg`, exactly the prompt our
trainer composes), at the same resolution, batch, learning rate, schedule (constant), steps,
gradient clipping, with EMA off and the text encoder frozen. The baseline reads an imagefolder
(hard links to the same PNGs, metadata.jsonl with file_name + text), as its README says to.

Throughput comes from the TensorBoard events both write each step (same clock for both),
between the end of the warm-up steps and the last step; runs alternate, medians are reported,
and the loss curves are kept side by side.

    python -m benchmarks.bench_anchor_coarse \
        --diffusers-examples /path/to/diffusers/examples --out runs/anchor_coarse
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.anchors import (
    environment_note,
    images_per_second,
    median_of,
    offline_env,
    record_anchor,
    scalar_events,
    write_result,
)

RESOLUTION = 64  # the quick profile's coarse resolution


def prepare(out: Path, n_images: int) -> tuple[Path, Path, Path]:
    """(tiny pipeline folder, Tiger dataset, imagefolder for the script), built once."""
    import torch

    from generation.coarse.data import load_coarse_dataset
    from generation.models import TinyModelConfig, build_tiny_pipeline
    from metadata.importers.phantom import build_phantom_dataset

    pipeline_dir, data_dir, folder = out / "tiny_sd", out / "phantom", out / "imagefolder"
    if not (pipeline_dir / "model_index.json").is_file():
        torch.manual_seed(0)
        build_tiny_pipeline(TinyModelConfig(resolution=RESOLUTION)).save_pretrained(
            pipeline_dir, safe_serialization=True
        )
    if not data_dir.is_dir():
        build_phantom_dataset(data_dir, n_images, 128, seed=0)
    if not (folder / "metadata.jsonl").is_file():
        dataset = load_coarse_dataset(data_dir, RESOLUTION, "full")
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for index, (path, prompt) in enumerate(
            zip(dataset.image_paths, dataset.prompts, strict=True)
        ):
            name = f"{index:05d}{path.suffix}"
            if not (folder / name).exists():
                os.link(path, folder / name)
            lines.append(json.dumps({"file_name": name, "text": prompt}))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return pipeline_dir, data_dir, folder


def run_script(args, pipeline_dir: Path, folder: Path, run_dir: Path) -> Path:
    script = Path(args.diffusers_examples) / "text_to_image" / "train_text_to_image.py"
    command = [
        sys.executable, str(script),
        "--pretrained_model_name_or_path", str(pipeline_dir),
        "--train_data_dir", str(folder),
        "--image_column", "image", "--caption_column", "text",
        "--resolution", str(RESOLUTION), "--center_crop", "--random_flip",
        "--train_batch_size", str(args.batch),
        "--max_train_steps", str(args.warmup + args.steps),
        "--learning_rate", "1e-4", "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
        "--max_grad_norm", "1.0",
        "--dataloader_num_workers", "0",
        "--checkpointing_steps", "1000000",
        "--seed", "0",
        "--output_dir", str(run_dir),
        "--logging_dir", "logs",
        "--report_to", "tensorboard",
        "--cache_dir", str(run_dir.parent / "cache"),
    ]  # fmt: skip
    subprocess.run(command, env=offline_env(run_dir.parent / "cache"), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    return run_dir


def run_ours(args, pipeline_dir: Path, data_dir: Path, run_dir: Path) -> Path:
    command = [
        sys.executable, "-m", "benchmarks.bench_anchor_coarse", "--mode", "ours",
        "--pipeline", str(pipeline_dir), "--data", str(data_dir), "--run-dir", str(run_dir),
        "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
    ]  # fmt: skip
    subprocess.run(command, env=offline_env(run_dir.parent / "cache"), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    return run_dir


def train_ours(args) -> None:
    """Our coarse trainer with the script's settings (called in its own process)."""
    from generation.coarse.config import CoarseConfig
    from generation.coarse.train import train_coarse

    config = CoarseConfig(
        train_data_dir=args.data,
        output_dir=args.run_dir,
        pretrained_model_name_or_path=args.pipeline,
        all_cases=True,
        train_text_encoder=False,
        resolution=RESOLUTION,
        train_batch_size=args.batch,
        max_train_steps=args.warmup + args.steps,
        learning_rate=1e-4,
        lr_scheduler="constant",
        lr_warmup_steps=0,
        caption_dropout=0.0,
        snr_gamma=None,
        use_ema=False,
        checkpointing_steps=10**9,
        validation_prompts=[],
        report_to="tensorboard",
        seed=0,
    )
    train_coarse(config)


def measured(run_dir: Path, tag: str, args, wall: float) -> dict:
    events = scalar_events(run_dir, tag)
    losses = [value for _, _, value in events]
    tail = losses[-args.loss_window :]
    return {
        "images_per_second": images_per_second(events, args.warmup, args.batch),
        "wall_seconds_whole_run": wall,
        "loss_curve": [round(v, 5) for v in losses],
        "final_loss_mean": statistics.fmean(tail),
        "final_loss_sd": statistics.stdev(tail),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--diffusers-examples", help="diffusers checkout's examples/ folder")
    parser.add_argument("--out", type=Path, default=Path("runs/anchor_coarse"))
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=80, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--loss-window", type=int, default=30)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--mode", choices=("ours",), help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "ours":
        train_ours(args)
        return
    if not args.diffusers_examples:
        parser.error("--diffusers-examples is required (a diffusers checkout's examples/)")
    from generation.offline import enforce_offline

    enforce_offline(args.out)
    pipeline_dir, data_dir, folder = prepare(args.out, args.n_images)
    runs: dict[str, list[dict]] = {"diffusers_script": [], "ours": []}
    for repeat in range(args.repeats):
        for name in ("diffusers_script", "ours"):
            run_dir = args.out / f"{name}_{repeat}"
            started = time.perf_counter()
            if name == "ours":
                run_ours(args, pipeline_dir, data_dir, run_dir)
                tag = "train/loss"
            else:
                run_script(args, pipeline_dir, folder, run_dir)
                tag = "train_loss"
            runs[name].append(measured(run_dir, tag, args, time.perf_counter() - started))
            print(name, repeat, round(runs[name][-1]["images_per_second"], 2), "images/s",
                  flush=True)  # fmt: skip
    ratio = median_of(runs["ours"], "images_per_second") / median_of(
        runs["diffusers_script"], "images_per_second"
    )
    result = {
        "ratio_images_per_second": ratio,
        "median_images_per_second": {k: median_of(v, "images_per_second") for k, v in runs.items()},
        "final_loss_mean": {k: median_of(v, "final_loss_mean") for k, v in runs.items()},
        "setup": {
            "resolution": RESOLUTION,
            "batch": args.batch,
            "timed_steps": args.steps,
            "warmup_steps": args.warmup,
            "repeats": args.repeats,
            "images": args.n_images,
            "script": "diffusers examples/text_to_image/train_text_to_image.py",
            **environment_note(),
        },
        "runs": runs,
    }
    write_result(args.results / "anchor_coarse.json", result)
    record_anchor("coarse_vs_diffusers_script", round(ratio, 3), args.results / "anchor_speed.json")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
