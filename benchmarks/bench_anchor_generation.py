"""Generation against the stock diffusers route, at equal measured quality (issue 23's anchor).

What a user without Tiger runs: `StableDiffusionControlNetPipeline` with a `MultiControlNetModel`
of the two trained branches, **at its own defaults** (PNDM, 50 steps, guidance 7.5, one call per
image). Ours: the generation engine at the settings the quick profile uses (DPM-Solver++,
`--steps`, guidance 4, batched CFG, PNG + provenance writes). Both make the same diversify jobs:
same prompts, same FG masks (drawn once by our mask bank), same background maps, same seeds.

Quality is measured on both sets by the pipeline's own checks: FG IoU (`inference.control`:
a segmenter trained on real train frames) and attribute agreement (`inference.evaluate`: probes
trained on real train frames). Equal quality = each set's estimate inside the other's 95% CI.
Speed: images per second of the whole generation call (model already loaded), repeats
alternating ours / stock, medians; the first repeat (`--images`) makes the quality sets, the
others (`--timing-images` each) only time.

    python -m benchmarks.bench_anchor_generation --run runs/quick --label FTC --images 24
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.anchors import environment_note, record_anchor, write_result

STOCK = {"scheduler": "pndm", "steps": 50, "guidance_scale": 7.5}


def stock_pipeline(pipe):
    """The diffusers pipeline a user would assemble from our trained parts, at its defaults."""
    from diffusers import PNDMScheduler, StableDiffusionControlNetPipeline
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    stock = StableDiffusionControlNetPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        controlnet=MultiControlNetModel(
            [pipe.controlnet.controlnet_fg, pipe.controlnet.controlnet_bg]
        ),
        # PNDM as Stable Diffusion releases ship it (scheduler_config.json of SD 1.5 / 2.1-base),
        # on our trained noise schedule.
        scheduler=PNDMScheduler.from_config(
            pipe.scheduler.config, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    stock.set_progress_bar_config(disable=True)
    return stock


def run_ours(request, pipe, out: Path) -> float:
    """Seconds for the engine to make every job of `request` into a fresh `out`."""
    from generation.inference.runner import run_generation

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    run_generation(replace(request, out_dir=str(out)), pipe=pipe)
    return time.perf_counter() - started


def run_stock(stock, rows: list[dict], ours: Path, out: Path, resolution: int) -> float:
    """Seconds for the stock pipeline to make the same jobs, one call each (defaults
    otherwise); writes a manifest folder like ours so the same checks can read it."""
    from PIL import Image

    from generation.inference.provenance import save_with_provenance
    from metadata.atomic import write_jsonl

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(ours / "conditions", out / "conditions")
    seconds, written = 0.0, []
    for row in rows:
        with Image.open(ours / row["condition_FG"]) as mask:
            fg = mask.convert("RGB")
        with Image.open(ours / row["condition_BG"]) as background:
            bg = background.convert("RGB")
        started = time.perf_counter()
        image = stock(
            prompt=row["prompt"],
            image=[fg, bg],
            height=resolution,
            width=resolution,
            generator=torch.Generator("cpu").manual_seed(row["seed"]),
        ).images[0]
        seconds += time.perf_counter() - started
        stock_row = {**row, **STOCK, "condition_BG": str((ours / row["condition_BG"]).resolve())}
        save_with_provenance(out / row["file_name"], image.convert("L").convert("RGB"), stock_row)
        written.append(stock_row)
    write_jsonl(out / "manifest.jsonl", written)
    return seconds


def quality(folder: Path, dataset: str, splits: str, probe) -> dict:
    """FG IoU and attribute agreement of one generated folder, with their 95% CIs."""
    from generation.inference.control import measure_control
    from generation.inference.evaluate import evaluate_generation

    control = measure_control(folder, dataset, splits_file=splits)
    scores = evaluate_generation(folder, dataset, splits_file=splits, probe=probe)
    fg = control["fg_iou"]
    out = {"fg_iou": {"value": fg["mean"], "ci95": list(fg["ci95"])}}
    for name, row in scores["agreement"].items():
        out[name] = {"value": row["agreement"], "ci95": list(row["ci95"])}
    return out


def equal_quality(ours: dict, stock: dict) -> dict:
    """Per measure: is each set's estimate inside the other's 95% CI?"""

    def inside(value: float, ci: list[float]) -> bool:
        return ci[0] <= value <= ci[1]

    return {
        name: inside(ours[name]["value"], stock[name]["ci95"])
        and inside(stock[name]["value"], ours[name]["ci95"])
        for name in ours
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="a finished `tiger run` folder")
    parser.add_argument("--label", default="FTC")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20, help="ours (the quick profile's 20)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--timing-images", type=int, default=8, help="images of each repeat after the first"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="runs/bench_anchor_generation")
    parser.add_argument("--out", default="benchmarks/results/anchor_generation.json")
    args = parser.parse_args()

    from generation.inference.engine import RuntimeConfig, SamplingConfig, load_generator
    from generation.inference.evaluate import fit_probe, real_splits
    from generation.inference.runner import GenerationRequest
    from generation.offline import enforce_offline

    torch.set_num_threads(args.threads)
    run, work = Path(args.run), Path(args.work)
    enforce_offline(work)
    dataset = str(run / "data" / "dataset")
    splits = str(run / "data" / "classifier" / "splits.json")
    sampling = SamplingConfig(num_inference_steps=args.steps)
    runtime = RuntimeConfig(batch_size=args.batch_size, cpu_threads=args.threads)
    pipe = load_generator(run / "fine", sampling, runtime)
    resolution = pipe.default_resolution()
    request = GenerationRequest(
        mode="diversify",
        model=str(run / "fine"),
        dataset=dataset,
        out_dir="",
        label=args.label,
        num_images=args.images,
        splits_file=splits,
        sampling=sampling,
        runtime=runtime,
    )
    stock = stock_pipeline(pipe)
    # Warm both paths once (kernel choice, allocator) on a throw-away job set.
    warm = replace(request, num_images=2)
    run_ours(warm, pipe, work / "warm")
    warm_rows = [json.loads(x) for x in (work / "warm" / "manifest.jsonl").read_text().splitlines()]
    run_stock(stock, warm_rows[:1], work / "warm", work / "warm_stock", resolution)

    ours_rate, stock_rate = [], []
    for repeat in range(args.repeats):
        ours_dir = work / f"ours_{repeat}"
        count = args.images if repeat == 0 else args.timing_images
        timed = request if repeat == 0 else replace(request, num_images=count)
        ours_s = run_ours(timed, pipe, ours_dir)
        rows = [json.loads(x) for x in (ours_dir / "manifest.jsonl").read_text().splitlines()]
        stock_s = run_stock(stock, rows, ours_dir, work / f"stock_{repeat}", resolution)
        ours_rate.append(count / ours_s)
        stock_rate.append(count / stock_s)
        print(f"repeat {repeat}: {count} images, ours {ours_s:.1f} s, stock {stock_s:.1f} s")

    meta_file, train, held = real_splits(dataset, splits, None, resolution)
    probe = fit_probe(meta_file, train, held, resolution)
    measured = {
        "ours": quality(work / "ours_0", dataset, splits, probe),
        "stock": quality(work / "stock_0", dataset, splits, probe),
    }
    equal = equal_quality(measured["ours"], measured["stock"])
    ours_ips, stock_ips = statistics.median(ours_rate), statistics.median(stock_rate)
    result = {
        "ratio": round(ours_ips / stock_ips, 3),
        "ours_images_per_s": ours_ips,
        "stock_images_per_s": stock_ips,
        "ours_runs_images_per_s": ours_rate,
        "stock_runs_images_per_s": stock_rate,
        "equal_quality": equal,
        "all_equal": all(equal.values()),
        "quality": measured,
        "settings": {
            "run": str(run),
            "label": args.label,
            "images": args.images,
            "timing_images": args.timing_images,
            "resolution": resolution,
            "ours": {
                "scheduler": "dpm++",
                "steps": args.steps,
                "guidance_scale": sampling.guidance_scale,
                "batch_size": args.batch_size,
            },
            "stock": {**STOCK, "batch_size": 1},
            "threads": args.threads,
        },
        "environment": environment_note(),
    }
    write_result(Path(args.out), result)
    record_anchor(
        "generation_vs_stock_equal_quality",
        {"ratio": result["ratio"], "all_equal": result["all_equal"]},
    )
    print(json.dumps({k: result[k] for k in ("ratio", "equal_quality")}, indent=1))


if __name__ == "__main__":
    main()
