"""Cost of every filter and memorization step as the pools grow to the paper's scale.

The paper filtered 30,000 generated images against 40,571 patients' frames. This benchmark
times each step of `tiger run`'s filter stage, and the memorization checks, at growing pool
sizes (synthetic x real), each step alone in a fresh process so its peak memory is its own:

- thumbnails: decoding every frame once into the 32x32 correlation vectors;
- off_distribution: each synthetic frame's best correlation with the real train frames;
- near_copies: the greedy near-copy rule over the synthetic pool (blocked matrix products);
- clip_score: the domain CLIP's image and text towers (quick-profile shape, random weights);
- moso: surrogate training and MoSo scores over real train + synthetic (quick profile);
- moso_synthetic_only: the same, with per-sample gradients for the synthetic images only
  (`score_real=False`: the real frames still train the surrogate and set the mean gradient);
- select: the whole selection rule from the scores;
- memorization: nearest real train frame by cosine, verified by SSIM, threshold calibrated
  on held-out frames (generation/inference/memorization.py);
- quality: FD, KID, precision/recall and the feature-space memorization test
  (generation/filtering/quality.py) on the CLIP features.

Frames: phantom frames (128 px real, 64 px synthetic: the quick profile's sizes), each written
many times with a random shift, flip, gain, blend and noise so that few are near-copies. Timing
needs realistic sizes and decoding, not a trained generator.

    python -m benchmarks.bench_filter_scaling --sizes 1000:1000,4000:5000,16000:20000,30000:40000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np
from PIL import Image

STEPS = (
    "thumbnails",
    "off_distribution",
    "near_copies",
    "clip_score",
    "moso",
    "moso_synthetic_only",
    "select",
    "memorization",
    "quality",
)
REAL_SIZE, SYNTHETIC_SIZE = 128, 64
HELD_OUT = 0.2


def variants(base: np.ndarray, count: int, size: int, seed: int, folder: Path) -> list[Path]:
    """`count` PNG frames derived from the base frames, each a little different."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        frame = base[rng.integers(len(base))].astype(np.float32)
        other = base[rng.integers(len(base))].astype(np.float32)
        frame = np.roll(frame, tuple(rng.integers(-12, 13, size=2)), axis=(0, 1))
        if rng.random() < 0.5:
            frame = frame[:, ::-1]
        frame = rng.uniform(0.8, 1.2) * (0.7 * frame + 0.3 * other)
        frame += rng.normal(0, 8, frame.shape)
        picture = Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8))
        if size != picture.width:
            picture = picture.resize((size, size), Image.Resampling.BILINEAR)
        path = folder / f"{index:06d}.png"
        if not path.exists():
            picture.save(path)
        paths.append(path)
    return paths


def make_frames(out: Path, n_synthetic: int, n_real: int) -> dict:
    """Paths and labels of the real (train, held-out) and synthetic frames, written once."""
    from metadata.importers.phantom import build_phantom_dataset
    from metadata.records import metadata_path, read_metadata, resolve

    base_dir = out / "base"
    try:
        meta_file = metadata_path(base_dir)
    except Exception:  # not built yet
        meta_file = metadata_path(build_phantom_dataset(base_dir, 300, REAL_SIZE, seed=0))
    base = np.stack(
        [
            np.asarray(Image.open(resolve(meta_file, r.file_name)).convert("L"))
            for r in read_metadata(meta_file)
        ]
    )
    real = variants(base, n_real, REAL_SIZE, 1, out / "real")
    synthetic = variants(base, n_synthetic, SYNTHETIC_SIZE, 2, out / "synthetic")
    labels = ["benign", "FTC", "MTC"]
    held = int(HELD_OUT * n_real)
    return {
        "train": [str(p) for p in real[held:]],
        "held_out": [str(p) for p in real[:held]],
        "synthetic": [str(p) for p in synthetic],
        "train_labels": [labels[i % 3] for i in range(n_real - held)],
        "synthetic_labels": [labels[1 + i % 2] for i in range(n_synthetic)],
    }


def paths(items: list[str]) -> list[Path]:
    return [Path(p) for p in items]


def step_thumbnails(frames: dict, cache: Path) -> dict:
    from generation.filtering.images import thumbnails

    for name in ("train", "held_out", "synthetic"):
        np.save(cache / f"thumbs_{name}.npy", thumbnails(paths(frames[name])))
    return {}


def step_off_distribution(frames: dict, cache: Path) -> dict:
    from generation.filtering.off_distribution import nearest_correlation, unlike_real

    train = np.load(cache / "thumbs_train.npy")
    minimum = float(nearest_correlation(np.load(cache / "thumbs_held_out.npy"), train).min())
    nearest = nearest_correlation(np.load(cache / "thumbs_synthetic.npy"), train)
    flags = unlike_real(nearest, 0.5 * minimum)
    np.save(cache / "off_distribution.npy", flags)
    return {"flagged": int(flags.sum())}


def step_near_copies(frames: dict, cache: Path) -> dict:
    from generation.filtering.select import near_copies

    vectors = np.load(cache / "thumbs_synthetic.npy")
    return {"copies": len(near_copies(list(range(len(vectors))), vectors))}


def tiny_clip(cache: Path):
    import open_clip

    from generation.filtering.clip_model import build_model, tokenizer_for
    from generation.filtering.clip_params import ClipConfig

    model = build_model(ClipConfig().model_cfg(), cache).eval()
    _, _, preprocess = open_clip.create_model_and_transforms(
        "tiger-clip", pretrained=None, load_weights=False
    )
    return model, preprocess, tokenizer_for(model)


def step_clip_score(frames: dict, cache: Path) -> dict:
    import torch

    from generation.filtering.clip_score import clip_scores, encode_images

    torch.manual_seed(0)
    model, preprocess, tokenizer = tiny_clip(cache)
    texts = [f"{label} nodule, hypoechoic, solid" for label in frames["synthetic_labels"]]
    scores = clip_scores(model, preprocess, tokenizer, paths(frames["synthetic"]), texts)
    np.save(cache / "clip.npy", scores)
    for name in ("train", "held_out"):  # the quality step's real features
        features = encode_images(model, preprocess, paths(frames[name]))
        torch.save(features, cache / f"features_{name}.pt")
    return {"scored": len(scores)}


def step_moso(frames: dict, cache: Path, score_real: bool = True) -> dict:
    import torch

    from generation.filtering.images import load_gray_stack
    from generation.filtering.moso_params import MosoConfig
    from generation.filtering.moso_run import moso_scores

    config = MosoConfig(epochs=6, score_real=score_real)  # the quick profile's surrogate
    pool = paths(frames["train"]) + paths(frames["synthetic"])
    labels = frames["train_labels"] + frames["synthetic_labels"]
    classes = sorted(set(labels))
    images = load_gray_stack(pool, config.image_size)
    target = torch.tensor([classes.index(label) for label in labels])
    scored = None if score_real else np.arange(len(pool)) >= len(frames["train"])
    torch.manual_seed(0)
    work = cache / ("moso" if score_real else "moso_synthetic_only") / str(time.time_ns())
    scores = moso_scores(images, target, len(classes), config, work, scored)
    np.save(cache / "moso.npy", scores[len(frames["train"]) :])
    return {"pool": len(pool), "scored": int(np.isfinite(scores).sum())}


def step_moso_synthetic_only(frames: dict, cache: Path) -> dict:
    return step_moso(frames, cache, score_real=False)


def step_select(frames: dict, cache: Path) -> dict:
    from generation.filtering.select import FilterConfig, select

    reasons = select(
        frames["synthetic_labels"],
        np.load(cache / "clip.npy"),
        np.load(cache / "moso.npy"),
        FilterConfig(clip_quantile=0.2, moso_prune_ratio=0.2),
        np.load(cache / "thumbs_synthetic.npy"),
        np.load(cache / "off_distribution.npy"),
    )
    return {"kept": sum(1 for reason in reasons if not reason)}


def step_memorization(frames: dict, cache: Path) -> dict:
    from generation.inference.memorization import TrainIndex, calibrate_threshold, check_images

    index = TrainIndex(paths(frames["train"]), SYNTHETIC_SIZE)
    calibration = calibrate_threshold(index, paths(frames["held_out"]))
    synthetic = paths(frames["synthetic"])
    _, summary = check_images(index, synthetic, calibration["threshold"], [None] * len(synthetic))
    return {"fraction_flagged": summary["fraction_flagged"]}


def step_quality(frames: dict, cache: Path) -> dict:
    import torch

    from generation.filtering.clip_score import encode_images
    from generation.filtering.quality import quality_report

    torch.manual_seed(0)
    model, preprocess, _ = tiny_clip(cache)
    synthetic = encode_images(model, preprocess, paths(frames["synthetic"]))
    report = quality_report(
        torch.load(cache / "features_train.pt", weights_only=True),
        torch.load(cache / "features_held_out.pt", weights_only=True),
        {"synthetic": synthetic},
    )
    return {"memorized_fraction": report["modes"]["synthetic"]["memorized_fraction"]}


def run_step(name: str, frames_file: str, cache: str, threads: int, queue) -> None:
    """One step in this (fresh) process: seconds, and the process's peak resident memory."""
    import torch

    torch.set_num_threads(threads)
    frames = json.loads(Path(frames_file).read_text())
    started = time.perf_counter()
    extra = globals()[f"step_{name}"](frames, Path(cache))
    seconds = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    queue.put({"seconds": seconds, "peak_rss_gib": peak_gib, **extra})


def measure(name: str, frames_file: Path, cache: Path, threads: int, limit_s: float) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=run_step, args=(name, str(frames_file), str(cache), threads, queue)
    )
    process.start()
    process.join(limit_s)
    if process.is_alive():
        process.kill()
        return {"seconds": None, "over_limit_s": limit_s}
    if process.exitcode != 0:
        raise RuntimeError(f"step {name} failed (exit {process.exitcode})")
    return queue.get()


def moso_setting() -> dict:
    from generation.filtering.moso_params import MosoConfig

    config = MosoConfig(epochs=6)
    return {k: getattr(config, k) for k in ("image_size", "epochs", "gradients", "last_layers")}


def plot(results: list[dict], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for step in STEPS:
        points = [(r["synthetic"], r["steps"][step]) for r in results if step in r["steps"]]
        points = [(n, s) for n, s in points if s.get("seconds") is not None]
        if not points:
            continue
        sizes = [n for n, _ in points]
        axes[0].loglog(sizes, [s["seconds"] for _, s in points], "o-", label=step)
        axes[1].semilogx(sizes, [s["peak_rss_gib"] for _, s in points], "o-", label=step)
    axes[0].set(xlabel="synthetic images (real frames grow with them)", ylabel="seconds")
    axes[1].set(xlabel="synthetic images", ylabel="peak resident memory (GiB)")
    axes[0].legend(fontsize=7)
    axes[0].set_title("filter and memorization steps, 2 CPU cores")
    figure.tight_layout()
    figure.savefig(target, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_filter_scaling"))
    parser.add_argument("--sizes", default="1000:1000,4000:5000,16000:20000,30000:40000")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit-s", type=float, default=1800.0, help="per step (the target)")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    from generation.offline import enforce_offline

    enforce_offline(args.out)
    steps = args.steps.split(",")
    target = args.results / "filter_scaling.json"
    results = json.loads(target.read_text())["results"] if target.is_file() else []
    for pair in args.sizes.split(","):
        n_synthetic, n_real = (int(v) for v in pair.split(":"))
        work = args.out / f"{n_synthetic}x{n_real}"
        cache = work / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        frames_file = work / "frames.json"
        frames_file.write_text(json.dumps(make_frames(args.out, n_synthetic, n_real)))
        row = next(
            (r for r in results if (r["synthetic"], r["real"]) == (n_synthetic, n_real)), None
        )  # a size measured before keeps the figures of the steps not re-run
        if row is None:
            row = {"synthetic": n_synthetic, "real": n_real, "steps": {}}
            results = sorted([*results, row], key=lambda r: r["synthetic"])
        for step in steps:
            row["steps"][step] = measure(step, frames_file, cache, args.threads, args.limit_s)
            timing = row["steps"][step]
            if timing.get("seconds") is not None:
                timing["seconds_per_1k_synthetic"] = 1000 * timing["seconds"] / n_synthetic
            print(f"{n_synthetic}x{n_real} {step}: {json.dumps(timing)}", flush=True)
        summary = {
            "machine": f"{args.threads} CPU threads",
            "real_px": REAL_SIZE,
            "synthetic_px": SYNTHETIC_SIZE,
            "limit_s_per_step": args.limit_s,
            "moso": moso_setting(),
            "results": results,
        }
        args.results.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(summary, indent=1))
        plot(results, args.results / "filter_scaling.png")


if __name__ == "__main__":
    main()
