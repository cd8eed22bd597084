"""Generate N rare-subtype images per mode on the phantom and score them.

For each mode (diversify, reference): `run_generation` (resumable: re-running continues), then
attribute agreement per attribute (probe fit on real train images, ceiling on real held-out
images, shuffled-prompt control, bootstrap 95% CI) and the memorization check (nearest real
train image, SSIM, near-copy threshold calibrated on real held-out images). Writes a JSON
report and one small example grid per mode (reference mode: reference | generated pairs).

    python benchmarks/generation_quality.py --model runs/fine --data DATA --label FTC \\
        --images 200 --work runs/generation_quality
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from generation.inference.engine import RuntimeConfig, SamplingConfig
from generation.inference.evaluate import evaluate_generation, fit_probe, real_splits
from generation.inference.prompts import PromptConfig
from generation.inference.runner import GenerationRequest, run_generation
from metadata.splits import SplitConfig


def grid(rows: list[dict], gen: Path, out: Path, columns: int = 8, count: int = 32, tile=64):
    """A small contact sheet; in reference mode each generated tile follows its reference."""
    tiles = []
    for row in rows[:count]:
        if row.get("reference") and len(tiles) < count:
            tiles.append(row["reference"])
        tiles.append(str(gen / row["file_name"]))
    tiles = tiles[:count]
    height = (len(tiles) + columns - 1) // columns
    sheet = Image.new("L", (columns * tile, height * tile))
    for i, path in enumerate(tiles):
        with Image.open(path) as image:
            small = image.convert("L").resize((tile, tile), Image.Resampling.BILINEAR)
        sheet.paste(small, ((i % columns) * tile, (i // columns) * tile))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="fine-stage folder")
    parser.add_argument("--data", required=True, help="phantom dataset folder")
    parser.add_argument("--label", default="FTC")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--strength", type=float, default=0.6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="*", default=["diversify", "reference"])
    parser.add_argument("--work", default="runs/generation_quality")
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument("--note", default="", help="e.g. 'stand-in model: ...'")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    work, results = Path(args.work), Path(args.results)
    # The exporter's default split, named explicitly: requests, probe and evaluation share it.
    split = SplitConfig()
    meta_file, train, held = real_splits(args.data, split=split)
    started = time.perf_counter()
    probe = fit_probe(meta_file, train, held, 128)
    report = {"model": args.model, "data": args.data, "label": args.label, "note": args.note}
    report["probe_fit_s"] = round(time.perf_counter() - started, 1)
    for mode in args.modes:
        request = GenerationRequest(
            mode=mode,
            model=args.model,
            dataset=args.data,
            out_dir=str(work / mode),
            label=args.label,
            num_images=args.images,
            split=split,
            prompts=PromptConfig(),
            sampling=SamplingConfig(num_inference_steps=args.steps, strength=args.strength),
            runtime=RuntimeConfig(batch_size=args.batch_size, cpu_threads=args.threads),
        )
        started = time.perf_counter()
        summary = run_generation(request)
        seconds = time.perf_counter() - started
        scores = evaluate_generation(
            work / mode,
            args.data,
            probe=probe,
            out_file=work / f"{mode}_evaluation.json",
            split=split,
        )
        rows = [json.loads(x) for x in (work / mode / "manifest.jsonl").read_text().splitlines()]
        grid(rows, work / mode, results / f"generation_grid_{mode}_{args.label}.png")
        report[mode] = {
            "generation": summary,
            "generation_s": round(seconds, 1),
            **{k: v for k, v in scores.items() if k != "gen"},
        }
        print(json.dumps({mode: report[mode]}, indent=1), flush=True)
    out = results / f"generation_quality_{args.label}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
