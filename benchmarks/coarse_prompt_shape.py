"""Do the prompt words act? Taller-than-wide vs wider-than-tall on trained coarse pipelines.

For each pipeline given (e.g. a frozen random text encoder vs a trained one, same budget):
generates N images for each of two prompts that differ only in the shape word, with the same
seeds, segments the nodule by thresholding (the phantom's hypoechoic nodules are darker than
tissue), and compares height/width between the groups: per-seed paired difference with a 95% t
CI, paired one-sided Wilcoxon on the log ratio, Welch t-test. The same segmentation on real
phantom frames of each shape is the reference. Also reports blobs per image, speckle texture of
the generated frames against real frames (controls: other real frames, and real frames blurred
with sigma=1), and how far apart the text encoder puts the two prompts.

    python benchmarks/coarse_prompt_shape.py --pipeline RUN_A RUN_B --labels random trained \
        --data DATA --out benchmarks/results/X
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage, stats

from generation.autoencoder.metrics import gaussian_blur, texture_metrics
from generation.coarse.data import load_image
from generation.coarse.prompts import background_words, combine_prompt
from generation.models import TinyModelConfig, build_tiny_components, load_pipeline
from generation.offline import enforce_offline
from generation.training.validation import generate_images, image_grid
from metadata.records import metadata_path, read_metadata, resolve

NODULE = "benign, solid, hypoechoic, {shape}, well-defined margins, no calcifications, medium"
SHAPES = ("taller-than-wide", "wider-than-tall")
MIN_AREA_FRACTION = 0.0015  # of the frame; smaller dark specks are speckle, not nodules


def segment(gray: np.ndarray) -> tuple[np.ndarray | None, int]:
    """Largest dark region away from the side borders, and how many sizeable dark blobs exist."""
    smooth = ndimage.gaussian_filter(gray.astype(np.float32), gray.shape[0] / 64)
    level = np.median(smooth)
    spread = 1.4826 * np.median(np.abs(smooth - level)) + 1e-3
    dark = smooth < level - 2.5 * spread
    dark = ndimage.binary_fill_holes(ndimage.binary_opening(dark, iterations=1))
    labels, count = ndimage.label(dark)
    min_area = MIN_AREA_FRACTION * gray.size
    regions = []
    for index in range(1, count + 1):
        region = labels == index
        cols = np.flatnonzero(region.any(axis=0))
        touches_side = cols[0] == 0 or cols[-1] == gray.shape[1] - 1
        if region.sum() >= min_area and not touches_side:
            regions.append(region)
    if not regions:
        return None, 0
    regions.sort(key=lambda r: r.sum(), reverse=True)
    largest = regions[0].sum()
    blobs = sum(1 for r in regions if r.sum() >= 0.25 * largest)
    return regions[0], blobs


def aspect(region: np.ndarray) -> float:
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    return (rows[-1] - rows[0] + 1) / (cols[-1] - cols[0] + 1)


def measure(images: np.ndarray) -> dict:
    """images: uint8 [N, H, W, 3]."""
    ratios, blobs = [], []
    for image in images:
        region, count = segment(image.mean(axis=-1))
        blobs.append(count)
        ratios.append(aspect(region) if region is not None else np.nan)
    return {"ratios": np.array(ratios), "blobs": np.array(blobs)}


def mean_ci(values: np.ndarray) -> list[float]:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return [float(np.mean(values)) if len(values) else float("nan")] * 3
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return [round(float(values.mean()), 3), round(float(values.mean() - half), 3),
            round(float(values.mean() + half), 3)]  # fmt: skip


def real_reference(meta_file: Path, records, resolution: int) -> dict:
    """Same segmentation on real frames matching the prompt (solid, hypoechoic, no
    calcifications: calcified nodules cast shadows), per shape; validated against the masks."""
    result = {}
    for shape in SHAPES:
        chosen = [
            r for r in records
            if r.attributes.get("shape") == shape and r.attributes.get("composition") == "solid"
            and r.attributes.get("echogenicity") in ("hypoechoic", "markedly hypoechoic")
            and r.attributes.get("calcifications") == "none"
        ][:64]  # fmt: skip
        ratios, truth, overlaps, blobs = [], [], [], []
        for record in chosen:
            frame = load_image(resolve(meta_file, record.file_name), resolution)
            gray = (frame.mean(axis=0) + 1) * 127.5
            mask = (load_image(resolve(meta_file, record.condition_FG), resolution) > 0).any(0)
            region, count = segment(gray)
            blobs.append(count)
            truth.append(aspect(mask))
            if region is None:
                ratios.append(np.nan)
                overlaps.append(0.0)
            else:
                ratios.append(aspect(region))
                overlaps.append(float((region & mask).sum() / (region | mask).sum()))
        result[shape] = {
            "n": len(chosen),
            "height_over_width": mean_ci(np.array(ratios)),
            "mask_height_over_width": mean_ci(np.array(truth)),
            "segmentation_iou_median": round(float(np.median(overlaps)), 3),
            "segmented_fraction": float(np.isfinite(ratios).mean()),
            "mean_blobs": float(np.mean(blobs)),
        }
    return result


def prompt_distance(encoder, tokenizer, prompts: list[str]) -> float:
    """Relative L2 distance between the two prompts' token embeddings (the UNet's input)."""
    ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = encoder(ids)[0]
    return float((hidden[0] - hidden[1]).norm() / hidden[0].norm())


def paired_difference(tall: np.ndarray, wide: np.ndarray) -> dict:
    """Same seeds, two prompts: mean tall-minus-wide h/w with a 95% t CI, and tests."""
    paired = np.isfinite(tall) & np.isfinite(wide)
    difference = tall[paired] - wide[paired]
    log_difference = np.log(tall[paired]) - np.log(wide[paired])
    wilcoxon = None
    if paired.sum() > 1 and np.any(log_difference != 0):
        wilcoxon = stats.wilcoxon(log_difference, alternative="greater")
    finite_tall, finite_wide = tall[np.isfinite(tall)], wide[np.isfinite(wide)]
    welch = stats.ttest_ind(
        np.log(finite_tall), np.log(finite_wide), equal_var=False, alternative="greater"
    )
    return {
        "n_pairs": int(paired.sum()),
        "tall_minus_wide_mean_ci95": mean_ci(difference),
        "paired_wilcoxon_p": float(wilcoxon.pvalue) if wilcoxon else None,
        "welch_t_p_log_ratio": float(welch.pvalue),
    }


def evaluate_pipeline(
    folder: str, records, args, real_frames: torch.Tensor, resolution: int
) -> tuple[dict, np.ndarray]:
    run_file = Path(folder) / "tiger_coarse.json"
    run = json.loads(run_file.read_text()) if run_file.is_file() else {"config": {}}
    mode = run["config"].get("prompt_background", "full")
    common = Counter(background_words(r.text_bg) for r in records).most_common(1)[0][0]
    text_bg = next(r.text_bg for r in records if background_words(r.text_bg) == common)
    prompts = [combine_prompt(NODULE.format(shape=s), text_bg, mode) for s in SHAPES]

    pipeline = load_pipeline(folder)
    size = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    if size != resolution:
        raise ValueError(f"{folder}: generates {size} px, the first pipeline {resolution} px")
    seeds = list(range(args.n))
    images = generate_images(pipeline, prompts, seeds, args.steps, args.guidance)
    tall, wide = measure(images[0]), measure(images[1])
    generated = torch.from_numpy(images.reshape(-1, *images.shape[2:])).permute(0, 3, 1, 2)
    texture = texture_metrics(real_frames, generated.float() / 127.5 - 1).to_dict()

    tiny = run.get("tiny_config")
    distances = {
        "this_encoder": prompt_distance(pipeline.text_encoder, pipeline.tokenizer, prompts)
    }
    if tiny:
        torch.manual_seed(0)
        fresh = build_tiny_components(TinyModelConfig.from_dict(tiny))
        distances["random_init"] = prompt_distance(fresh.text_encoder, fresh.tokenizer, prompts)
    config = run["config"]
    return {
        "pipeline": str(folder),
        "text_encoder_trained": config.get("train_text_encoder"),
        "text_encoder_learning_rate": config.get("text_encoder_learning_rate"),
        "max_train_steps": config.get("max_train_steps"),
        "prompts": prompts,
        "height_over_width": {
            SHAPES[0]: mean_ci(tall["ratios"]),
            SHAPES[1]: mean_ci(wide["ratios"]),
        },
        "difference": paired_difference(tall["ratios"], wide["ratios"]),
        "segmented_fraction": {
            SHAPES[0]: float(np.isfinite(tall["ratios"]).mean()),
            SHAPES[1]: float(np.isfinite(wide["ratios"]).mean()),
        },
        "images_with_more_than_one_blob": int(
            (tall["blobs"] > 1).sum() + (wide["blobs"] > 1).sum()
        ),
        "images_total": 2 * args.n,
        "texture_vs_real_frames": texture,
        "prompt_embedding_relative_distance": distances,
    }, images


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", nargs="+", required=True, help="trained coarse folder(s)")
    parser.add_argument("--labels", nargs="+", help="one name per pipeline (default: folder)")
    parser.add_argument("--data", required=True, help="phantom dataset ROOT")
    parser.add_argument("--out", required=True, help="folder for results.json and grid PNGs")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    labels = args.labels or [Path(p).name for p in args.pipeline]
    if len(labels) != len(args.pipeline):
        parser.error("--labels needs one name per --pipeline")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    enforce_offline(out)
    if args.threads:
        torch.set_num_threads(args.threads)

    meta_file = metadata_path(args.data)
    records = read_metadata(meta_file)
    first = load_pipeline(args.pipeline[0])
    resolution = first.unet.config.sample_size * first.vae_scale_factor
    del first

    def frames(chosen) -> torch.Tensor:
        return torch.stack(
            [torch.from_numpy(load_image(resolve(meta_file, r.file_name), resolution))
             for r in chosen]
        )  # fmt: skip

    real_frames = frames(records[: 2 * args.n])
    other_real = frames(records[2 * args.n : 4 * args.n])
    result = {
        "data": str(args.data),
        "resolution": resolution,
        "seeds": list(range(args.n)),
        "steps": args.steps,
        "guidance": args.guidance,
        "runs": {},
        "texture_controls_vs_real_frames": {
            "other_real_frames": texture_metrics(real_frames, other_real).to_dict(),
            "real_frames_gaussian_blur_sigma1": texture_metrics(
                real_frames, gaussian_blur(real_frames)
            ).to_dict(),
        },
        "real_phantom_same_segmentation": real_reference(meta_file, records, resolution),
    }
    for label, folder in zip(labels, args.pipeline):
        result["runs"][label], images = evaluate_pipeline(
            folder, records, args, real_frames, resolution
        )
        grid = image_grid(images[:, : min(8, args.n)])
        Image.fromarray(grid).convert("L").save(out / f"grid_{label}.png", optimize=True)
        write_results(out, result)
    print(json.dumps(result, indent=2))
    return result


def write_results(out: Path, result: dict) -> None:
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
