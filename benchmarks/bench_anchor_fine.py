"""Fine training: our one fused dual-branch run against diffusers' `train_controlnet.py` run
twice, once per branch (nodule mask, then background map), as a user without Tiger would.

Same pipeline folder (the built-in tiny architecture with an 8x autoencoder, so diffusers'
default ControlNet condition encoder fits; random weights, saved with save_pretrained), same
images, conditions and captions, resolution, batch, learning rate (constant), steps and
gradient clipping, validation off. Each script run reads an imagefolder of hard links
(`file_name`, `conditioning_image_file_name`, `text`). Throughput comes from the TensorBoard
events both write each step. The two-script route trains both branches in
steps x (1/rate_FG + 1/rate_BG); ours trains both in steps / rate_ours. The ratio is of those
times (and, beside it, of whole-run wall times including model loading and caching).

    python -m benchmarks.bench_anchor_fine \
        --diffusers-examples /path/to/diffusers/examples --out runs/anchor_fine
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

RESOLUTION = 128
LEARNING_RATE = "1e-5"


def prepare(out: Path, n_images: int) -> tuple[Path, Path, dict[str, Path]]:
    """(pipeline folder, Tiger dataset, {branch: imagefolder}), built once."""
    import torch

    from generation.coarse.data import load_coarse_dataset
    from generation.models import TinyModelConfig, build_tiny_pipeline, vae_channels_for
    from metadata.importers.phantom import build_phantom_dataset
    from metadata.records import read_metadata, resolve

    pipeline_dir, data_dir = out / "tiny_sd_8x", out / "phantom"
    if not (pipeline_dir / "model_index.json").is_file():
        torch.manual_seed(0)
        config = TinyModelConfig(resolution=RESOLUTION, vae_block_out_channels=vae_channels_for(8))
        build_tiny_pipeline(config).save_pretrained(pipeline_dir, safe_serialization=True)
    if not data_dir.is_dir():
        build_phantom_dataset(data_dir, n_images, RESOLUTION, seed=0)
    dataset = load_coarse_dataset(data_dir, RESOLUTION, "full")
    meta_file = data_dir / "metadata.jsonl"
    if not meta_file.is_file():
        meta_file = next(data_dir.rglob("metadata.jsonl"))
    records = {r.file_name: r for r in read_metadata(meta_file)}
    folders = {}
    for branch, key in (("fg", "condition_FG"), ("bg", "condition_BG")):
        folder = out / f"imagefolder_{branch}"
        folders[branch] = folder
        if (folder / "metadata.jsonl").is_file():
            continue
        (folder / "conditions").mkdir(parents=True, exist_ok=True)
        lines = []
        for index, (record, prompt) in enumerate(
            zip(dataset.records, dataset.prompts, strict=True)
        ):
            image = f"{index:05d}.png"
            condition = f"conditions/{index:05d}.png"
            os.link(dataset.image_paths[index], folder / image)
            os.link(resolve(meta_file, getattr(records[record.file_name], key)), folder / condition)
            row = {"file_name": image, "conditioning_image_file_name": condition, "text": prompt}
            lines.append(json.dumps(row))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return pipeline_dir, data_dir, folders


def run_script(args, pipeline_dir: Path, folder: Path, run_dir: Path) -> None:
    script = Path(args.diffusers_examples) / "controlnet" / "train_controlnet.py"
    command = [
        sys.executable, str(script),
        "--pretrained_model_name_or_path", str(pipeline_dir),
        "--train_data_dir", str(folder),
        "--image_column", "image", "--conditioning_image_column", "conditioning_image",
        "--caption_column", "text",
        "--resolution", str(RESOLUTION),
        "--train_batch_size", str(args.batch),
        "--max_train_steps", str(args.warmup + args.steps),
        "--learning_rate", LEARNING_RATE, "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
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


def run_ours(args, pipeline_dir: Path, data_dir: Path, run_dir: Path) -> None:
    command = [
        sys.executable, "-m", "benchmarks.bench_anchor_fine", "--mode", "ours",
        "--pipeline", str(pipeline_dir), "--data", str(data_dir), "--run-dir", str(run_dir),
        "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
    ]  # fmt: skip
    subprocess.run(command, env=offline_env(run_dir.parent / "cache"), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def train_ours(args) -> None:
    """Our fine trainer with the scripts' settings (called in its own process)."""
    from generation.fine.config import FineConfig
    from generation.fine.train import train_fine

    config = FineConfig(
        train_data_dir=args.data,
        output_dir=args.run_dir,
        coarse_model_path=args.pipeline,
        all_cases=True,
        resolution=RESOLUTION,
        train_batch_size=args.batch,
        max_train_steps=args.warmup + args.steps,
        learning_rate=float(LEARNING_RATE),
        lr_scheduler="constant",
        lr_warmup_steps=0,
        caption_dropout=0.0,
        snr_gamma=None,
        checkpointing_steps=10**9,
        validation_steps=10**9,
        num_validation_items=0,
        report_to="tensorboard",
        seed=0,
    )
    train_fine(config)


def measured(run_dir: Path, tag: str, args, wall: float) -> dict:
    events = scalar_events(run_dir, tag)
    losses = [value for _, _, value in events]
    return {
        "images_per_second": images_per_second(events, args.warmup, args.batch),
        "wall_seconds_whole_run": wall,
        "loss_curve": [round(v, 5) for v in losses],
        "final_loss_mean": statistics.fmean(losses[-args.loss_window :]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--diffusers-examples", help="diffusers checkout's examples/ folder")
    parser.add_argument("--out", type=Path, default=Path("runs/anchor_fine"))
    parser.add_argument("--n-images", type=int, default=120)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--loss-window", type=int, default=15)
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
    pipeline_dir, data_dir, folders = prepare(args.out, args.n_images)
    runs: dict[str, list[dict]] = {"script_fg": [], "script_bg": [], "ours_fused": []}
    for repeat in range(args.repeats):
        for name in runs:
            run_dir = args.out / f"{name}_{repeat}"
            started = time.perf_counter()
            if name == "ours_fused":
                run_ours(args, pipeline_dir, data_dir, run_dir)
                tag = "train/loss"
            else:
                run_script(args, pipeline_dir, folders[name.split("_")[1]], run_dir)
                tag = "loss"
            runs[name].append(measured(run_dir, tag, args, time.perf_counter() - started))
            print(name, repeat, round(runs[name][-1]["images_per_second"], 3), "images/s",
                  flush=True)  # fmt: skip
    rate = {name: median_of(values, "images_per_second") for name, values in runs.items()}
    wall = {name: median_of(values, "wall_seconds_whole_run") for name, values in runs.items()}
    ratio = (1 / rate["script_fg"] + 1 / rate["script_bg"]) / (1 / rate["ours_fused"])
    result = {
        "ratio_two_scripts_time_over_ours": ratio,
        "ratio_whole_run_wall": (wall["script_fg"] + wall["script_bg"]) / wall["ours_fused"],
        "median_images_per_second": rate,
        "median_wall_seconds": wall,
        "setup": {
            "resolution": RESOLUTION,
            "batch": args.batch,
            "timed_steps": args.steps,
            "warmup_steps": args.warmup,
            "repeats": args.repeats,
            "images": args.n_images,
            "script": "diffusers examples/controlnet/train_controlnet.py, once per branch",
            **environment_note(),
        },
        "runs": runs,
    }
    write_result(args.results / "anchor_fine.json", result)
    record_anchor("fine_vs_two_scripts", round(ratio, 3), args.results / "anchor_speed.json")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
