"""Every stage on a Stable-Diffusion-sized model: `tiger run --profile gpu --pretrained TWIN`.

The twin (`generation.twin`) has SD 2.1-base's exact architecture with random weights. `--set`
overrides shrink steps, counts and (on the CPU) the resolution, never the model. The coarse stage
runs twice: the profile's full UNet fine-tune inside the pipeline, and LoRA on its own. Per stage:
pass/fail, peak RSS (the runner's sampler plus the kernel's own record), seconds per training step
or per generated image, and peak GPU memory on CUDA. Writes
benchmarks/results/real_scale_{cpu,gpu}.json.

    python -m benchmarks.real_scale [--arch sd21base] [--resolution 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from generation.twin import write_twin
from metadata.atomic import write_json
from scripts.pipeline.monitor import run_monitored

GIB = 2**30
# Stage output folders whose name is not the stage's (scripts/pipeline/stages.py).
FOLDER_STAGES = {
    "data-dataset": "data",
    "data-classifier": "split",
    "data-train_only": "train_only",
    "filter-clip": "clip",
}


def pipeline_overrides(args: argparse.Namespace) -> list[str]:
    """Steps, counts and resolution shrunk; the profile's model, optimizer and precision kept
    (on the CPU mixed precision falls back to float32 by itself)."""
    device = args.device
    r = args.resolution
    return [
        "subtypes=[FTC]",
        f"data.n_images={args.images}",
        "data.prevalence={benign: 0.6, FTC: 0.4}",  # enough FTC cases for valid and test
        f"data.size={r}",
        f"coarse.resolution={r}",
        f"coarse.max_train_steps={args.steps}",
        "coarse.train_batch_size=1",
        "coarse.gradient_accumulation_steps=1",
        f"coarse.checkpointing_steps={args.steps}",
        "coarse.validation_prompts=[]",
        f"coarse.optimizer={args.optimizer}",
        f"fine.resolution={r}",
        f"fine.max_train_steps={args.steps}",
        "fine.train_batch_size=1",
        f"fine.checkpointing_steps={args.steps}",
        "fine.num_validation_items=0",
        f"fine.optimizer={args.optimizer}",
        f"generation.diversify={args.generated}",
        f"generation.reference={args.generated}",
        "generation.options.steps=4",
        f"generation.options.resolution={r}",
        "generation.options.batch-size=2",
        f"generation.options.precision={'bf16' if device == 'cuda' else 'fp32'}",
        "clip.epochs=1",
        f"clip.device={device}",
        "moso.epochs=2",
        f"moso.device={device}",
        "classifier.seeds=[0]",
        "classifier.train.epochs=1",
        "classifier.train.batch_size=8",
    ]


def stage_rows(run: Path, steps: int, generated: int) -> dict:
    """One row per finished stage, from its cache marker (so a failed run still reports the
    stages before the failure); stage name = its folder, e.g. generate/FTC -> generate-FTC."""
    rows = {}
    for marker in sorted(run.rglob(".tiger_stage.json")):
        folder = marker.parent
        name = "-".join(folder.relative_to(run).parts)
        name = FOLDER_STAGES.get(name, name)
        stage = json.loads(marker.read_text())
        row = {
            "passed": True,
            "peak_rss_gib": round(stage["peak_rss_mb"] / 1024, 2),
            "seconds": stage["seconds"],
        }
        if stage.get("peak_gpu_mb"):
            row["peak_gpu_gib"] = round(stage["peak_gpu_mb"] / 1024, 2)
        timing = folder / "train_timing.json"
        if timing.is_file():
            row["s_per_step"] = json.loads(timing.read_text())["seconds_per_step"]
        elif name.startswith("generate-"):
            row["s_per_image"] = round(stage["seconds"] / (2 * generated), 2)
        rows[name] = row
    return rows


def lora_run(args: argparse.Namespace, twin: Path, run: Path, work: Path) -> dict:
    """The coarse stage with LoRA on the same data and settings (the profile's other route)."""
    output = work / "coarse-lora"
    command = [
        sys.executable, "-m", "generation.coarse.cli", "--profile", "gpu",
        "--pretrained_model_name_or_path", str(twin), "--train_data_dir",
        str(run / "data" / "train_only"), "--output_dir", str(output),
        "--use_lora", "true", "--resolution", str(args.resolution),
        "--max_train_steps", str(args.steps), "--train_batch_size", "1",
        "--gradient_accumulation_steps", "1", "--checkpointing_steps", str(args.steps),
        "--validation_prompts", "--resume_from_checkpoint", "latest",
    ]  # fmt: skip
    result = run_monitored(command, work / "coarse-lora.log")
    row = {
        "passed": result.returncode == 0,
        "peak_rss_gib": round(result.peak_rss_mb / 1024, 2),
        "seconds": round(result.seconds, 1),
    }
    if result.peak_gpu_mb:
        row["peak_gpu_gib"] = round(result.peak_gpu_mb / 1024, 2)
    timing = output / "train_timing.json"
    if timing.is_file():
        row["s_per_step"] = json.loads(timing.read_text())["seconds_per_step"]
    checkpoint = output / f"checkpoint-{args.steps}"
    if checkpoint.is_dir():
        row["checkpoint_mib"] = round(
            sum(p.stat().st_size for p in checkpoint.iterdir()) / 2**20, 1
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="sd21base")
    parser.add_argument("--width-divisor", type=int, default=1, help="channels / N (CI only)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--images", type=int, default=80, help="phantom frames")
    parser.add_argument("--generated", type=int, default=4, help="images per mode")
    parser.add_argument("--optimizer", default="adamw8bit")
    parser.add_argument("--work", default="runs/real_scale")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = Path(args.work).resolve()
    suffix = f"-w{args.width_divisor}" if args.width_divisor > 1 else ""
    twin = work / f"twin-{args.arch}{suffix}"
    started = time.perf_counter()
    if not (twin / "model_index.json").is_file():
        counts = write_twin(args.arch, twin, width_divisor=args.width_divisor)
    else:
        import torch

        from generation.twin import build_twin_pipeline, parameter_counts

        with torch.device("meta"):
            counts = parameter_counts(build_twin_pipeline(args.arch, args.width_divisor))
    results: dict = {
        "model": args.arch,
        "width_divisor": args.width_divisor,
        "parameters_millions": {k: round(v / 1e6, 1) for k, v in counts.items()},
        "device": args.device,
        "resolution": args.resolution,
        "optimizer": args.optimizer,
        "overrides": pipeline_overrides(args),
        "twin_seconds": round(time.perf_counter() - started, 1),
    }
    run = work / "run"
    command = [
        sys.executable, "-m", "scripts.cli", "run", "--profile", "gpu", "--pretrained",
        str(twin), "--run-dir", str(run), "--set", *pipeline_overrides(args),
    ]  # fmt: skip
    done = subprocess.run(command)
    results["pipeline_exit_code"] = done.returncode
    stages = stage_rows(run, args.steps, args.generated)
    if done.returncode != 0:
        results["failed_stage_log"] = sorted(str(p) for p in (run / "logs").glob("*.log"))[-1:]
    stages["coarse-lora"] = lora_run(args, twin, run, work)
    results["stages"] = stages
    results["all_passed"] = done.returncode == 0 and all(s["passed"] for s in stages.values())
    results["max_peak_rss_gib"] = max(
        (s.get("peak_rss_gib", 0) for s in stages.values()), default=0
    )
    out = (
        args.out
        or f"benchmarks/results/real_scale_{'gpu' if args.device == 'cuda' else 'cpu'}.json"
    )
    write_json(out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
