"""Does the fine stage's control work? Held-out masks in, nodules out; brighter map, brighter.

1. Mask control: for every held-out item (case-level "test" split, never trained on), generate
   with the trained branches and with the coarse model alone (both branches off, same texts,
   same seed). A U-Net segmenter fit on real *training* frames (generation.inference.control) finds
   the nodule in each image; IoU with the given condition_FG. Also reported: the segmenter on the
   real held-out frames (ceiling). Paired bootstrap 95% CI of the difference.
2. Background control: same item, seed and texts; only condition_BG changes (map x0.7 vs x1.3).
   Background mean grey level (metadata.background.measure_background, outside the given mask)
   must move with the map.

    python benchmarks/fine_control_quality.py --fine RUN_FINE --data DATA [--limit 60]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from generation.fine.data import load_fine_dataset
from generation.fine.pipeline import TigerFinePipeline
from generation.inference.control import ControlConfig, NoduleSegmenter, iou, summary
from generation.training.validation import image_grid
from metadata.atomic import save_png, write_json
from metadata.background import measure_background


def to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def grey_uint8(tensor: torch.Tensor) -> np.ndarray:
    return (tensor.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fine", required=True, help="fine-stage output folder")
    parser.add_argument("--data", required=True, help="Tiger dataset folder (the phantom)")
    parser.add_argument("--split", default="test", help="held-out split to generate from")
    parser.add_argument(
        "--splits", default=None, help="classifier splits.json (default: the fine run's)"
    )
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--segmenter", help="segmenter weights: loaded if present, else fit+saved")
    parser.add_argument("--out", default="benchmarks/results/fine_control_quality.json")
    parser.add_argument("--grid", default="benchmarks/results/fine_control_grid.png")
    parser.add_argument("--bg_grid", default="benchmarks/results/fine_background_grid.png")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pipeline = TigerFinePipeline.from_pretrained(args.fine)
    pipeline.use_scheduler("ddim")
    pipeline.set_progress_bar_config(disable=True)
    mode = pipeline.config.prompt_background
    resolution = pipeline.default_resolution()
    run = json.loads((Path(args.fine) / "tiger_fine.json").read_text("utf-8"))["config"]
    splits = args.splits or run["splits_file"]
    if not splits:
        raise SystemExit("pass --splits CROOT/splits.json (the fine run recorded none)")
    train = load_fine_dataset(args.data, resolution, mode, splits)
    held = load_fine_dataset(args.data, resolution, mode, splits, split=args.split)
    if {r.case_id for r in train.records} & {r.case_id for r in held.records}:
        raise SystemExit("held-out cases overlap the training cases")
    count = min(args.limit, len(held))

    # The settings behind the published numbers: full-resolution frames, 400 steps of 16.
    segmenter_config = ControlConfig(image_size=resolution, widths=(16, 32, 64, 64))
    segmenter = NoduleSegmenter(segmenter_config, steps=400)
    if args.segmenter and Path(args.segmenter).is_file():
        segmenter.load(args.segmenter)
    else:
        every = list(range(len(train)))
        segmenter.fit(
            (train.load_pixels(every)[:, :1] + 1) / 2,
            train.load_conditions(every)[0][:, :1],
            log_every=100,
        )
        if args.segmenter:
            segmenter.save(args.segmenter)

    def generate(indices, fg, bg, scale):
        records = [held.records[i] for i in indices]
        return pipeline(
            text_nd=[r.text_nd for r in records],
            text_bg=[r.text_bg for r in records],
            condition_FG=fg,
            condition_BG=bg,
            conditioning_scale=scale,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            generator=[torch.Generator().manual_seed(1000 + i) for i in indices],
            output_type="np",
        ).images

    scores = {"controlled": [], "uncontrolled": [], "real": []}
    background = {"dark_map": [], "bright_map": []}
    grid_rows, bg_rows = [], []
    for start in range(0, count, args.batch):
        indices = list(range(start, min(start + args.batch, count)))
        fg, bg = held.load_conditions(indices)
        real = ((held.load_pixels(indices) + 1) / 2).permute(0, 2, 3, 1).numpy()
        controlled = generate(indices, fg, bg, 1.0)
        uncontrolled = generate(indices, fg, bg, 0.0)
        dark = generate(indices, fg, (bg * 0.7).clamp(0, 1), 1.0)
        bright = generate(indices, fg, (bg * 1.3).clamp(0, 1), 1.0)
        for k in range(len(indices)):
            mask = fg[k, 0].numpy() > 0.5
            scores["controlled"].append(iou(segmenter.predict(controlled[k]), mask))
            scores["uncontrolled"].append(iou(segmenter.predict(uncontrolled[k]), mask))
            scores["real"].append(iou(segmenter.predict(real[k]), mask))
            background["dark_map"].append(measure_background(to_uint8(dark[k]), mask).mean)
            background["bright_map"].append(measure_background(to_uint8(bright[k]), mask).mean)
            if len(grid_rows) < 6:
                cells = [grey_uint8(fg[k]), grey_uint8(bg[k]), to_uint8(real[k])]
                cells += [to_uint8(controlled[k]), to_uint8(uncontrolled[k])]
                grid_rows.append(np.stack(cells))
                bg_cells = [grey_uint8((bg[k] * 0.7).clamp(0, 1)), to_uint8(dark[k])]
                bg_cells += [grey_uint8((bg[k] * 1.3).clamp(0, 1)), to_uint8(bright[k])]
                bg_rows.append(np.stack(bg_cells))
        print(f"{start + len(indices)}/{count} items", flush=True)

    difference = np.asarray(scores["controlled"]) - np.asarray(scores["uncontrolled"])
    shift = np.asarray(background["bright_map"]) - np.asarray(background["dark_map"])
    result = {
        "iou": {name: summary(values) for name, values in scores.items()},
        "iou_controlled_minus_uncontrolled": summary(difference.tolist()),
        "background_mean": {name: summary(values) for name, values in background.items()},
        "background_bright_minus_dark": summary(shift.tolist()),
        "background_pairs_in_right_direction": float((shift > 0).mean()),
        "settings": vars(args),
        "held_out_split": args.split,
        "seconds": time.perf_counter() - started,
    }
    write_json(args.out, result)
    # Grey PNGs (the images are grey anyway): a third of the size in the repository.
    save_png(args.grid, Image.fromarray(image_grid(np.stack(grid_rows))).convert("L"))
    save_png(args.bg_grid, Image.fromarray(image_grid(np.stack(bg_rows))).convert("L"))
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=2))


if __name__ == "__main__":
    main()
