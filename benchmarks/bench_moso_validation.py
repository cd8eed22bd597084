"""Does MoSo rank deliberately corrupted synthetic images at the bottom? (phantom validation)

Pool = real phantom train split (seed 0) + stand-in "synthetic" images (a phantom from seed 1,
written as a synthetic manifest; the generation stage does not exist yet) + corrupted images:
wrong-class (an image of one class labelled as another), pure noise, exact duplicates.
Reports precision of the bottom-k (k = number of corrupted images) over the whole pool and per
class (ranking within each class, as the filter does), per corruption type, against the
precision a random ranking would give, with a bootstrap CI over repeated seeds.

Two ceilings say how far any detector could go on wrong-class images here: the phantom's own
Bayes posterior P(label | the nodule's sampled attributes) ("attribute oracle"), and a surrogate
of the same architecture trained on --ceiling-frames clean phantom frames from another seed,
ranking the pool by log P(label | image) ("clean classifier"). Both rank within each class.

With --clip-epochs N, also trains the domain CLIP on the real train split and runs the whole
filter the pipeline runs (frames unlike any real frame, CLIP class quantile, then the near-copy
rule, then the MoSo prune ratio; generation/filtering/select.py) on the synthetic images: which
corruptions each rule drops, and how many clean synthetic images are lost, against a random
filter of the same size.

    python -m benchmarks.bench_moso_validation --out runs/bench_moso_validation
    python -m benchmarks.bench_moso_validation --forms first_order --partitions 1 --clip-epochs 10
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from generation.filtering.cli import add_dataclass_options, pick
from generation.filtering.clip_params import ClipConfig
from generation.filtering.clip_train import train_clip
from generation.filtering.commands import run_clip_score, run_filter, run_moso
from generation.filtering.images import thumbnails
from generation.filtering.manifest import read_manifest
from generation.filtering.moso_params import MosoConfig
from generation.filtering.moso_pool import Pool, build_pool
from generation.filtering.moso_train import (
    SurrogateCheckpoint,
    load_surrogate,
    read_index,
    train_surrogate,
)
from generation.filtering.select import FilterConfig, near_copies
from generation.filtering.standin import add_corruptions, dataset_as_manifest
from generation.offline import enforce_offline
from metadata.importers.phantom import build_phantom_dataset
from metadata.phantom import PhantomConfig
from metadata.phantom_priors import class_posterior
from metadata.records import metadata_path, read_metadata

KINDS = ("wrong_class", "noise", "duplicate")


def bottom_k_precision(scores: np.ndarray, is_bad: np.ndarray, groups: np.ndarray) -> float:
    """Rank within each group; the k lowest per group, k = bad count in that group."""
    hits = total = 0
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        k = int(is_bad[members].sum())
        if k == 0:
            continue
        lowest = members[np.argsort(scores[members], kind="stable")[:k]]
        hits += int(is_bad[lowest].sum())
        total += k
    return hits / max(total, 1)


def phantom(args, seed: int) -> PhantomConfig:
    config = PhantomConfig(size=args.size, seed=seed)
    if args.difficulty is not None:
        config.difficulty = args.difficulty
    return config


def run_once(out: Path, args, seed: int, form: str, partitions: int) -> dict:
    real = build_phantom_dataset(out / "real", args.n_real, args.size, seed, phantom(args, seed))
    synth = build_phantom_dataset(
        out / "synthetic_src", args.n_synthetic, args.size, seed + 1000, phantom(args, seed + 1000)
    )
    gen = out / "gen"
    dataset_as_manifest(synth, gen)
    add_corruptions(
        gen,
        args.wrong_class,
        args.noise,
        args.duplicates,
        seed=seed,
        noise_labels=args.noise_labels,
    )
    config = replace(
        pick(args, MosoConfig), image_size=args.size, seed=seed, form=form, partitions=partitions
    )
    started = time.time()
    scores_file = run_moso(real, gen / "manifest.jsonl", out / f"moso_{form}_{partitions}", config)
    seconds = time.time() - started
    rows = [json.loads(line) for line in scores_file.read_text().splitlines()]
    manifest = {json.loads(x)["id"]: json.loads(x) for x in (gen / "manifest.jsonl").open()}
    kinds = np.array([manifest.get(r["id"], {}).get("corruption", "") for r in rows])
    scores = np.array([r["moso_score"] for r in rows])
    labels = np.array([r["label"] for r in rows])
    bad = kinds != ""
    result = {"seconds": seconds, "pool": len(rows), "corrupted": int(bad.sum())}
    everyone = np.zeros(len(rows), dtype=int)
    result["precision_bottom_k_pool"] = bottom_k_precision(scores, bad, everyone)
    result["precision_bottom_k_per_class"] = bottom_k_precision(scores, bad, labels)
    result["random_expectation"] = float(bad.mean())
    percentile = scores.argsort().argsort() / (len(scores) - 1)
    result["mean_percentile"] = {
        kind or "clean": float(percentile[kinds == kind].mean()) for kind in np.unique(kinds)
    }
    # The filter's near-copy rule runs before MoSo (generation/filtering/select.py): what it
    # drops goes to the bottom, the rest keeps its MoSo order.
    synthetic = read_manifest(gen / "manifest.jsonl")
    copies = near_copies(list(range(len(synthetic))), thumbnails([im.path for im in synthetic]))
    copy_ids = {synthetic[i].id for i in copies}
    combined = np.where([r["id"] in copy_ids for r in rows], -np.inf, scores)
    result["near_copy_rule_flagged"] = {
        kind or "clean": int(
            sum(1 for i in copies if synthetic[i].row.get("corruption", "") == kind)
        )
        for kind in ("", "wrong_class", "noise", "duplicate")
    }
    result["precision_bottom_k_pool_with_copy_rule"] = bottom_k_precision(combined, bad, everyone)
    result["precision_bottom_k_per_class_with_copy_rule"] = bottom_k_precision(
        combined, bad, labels
    )
    for kind, value in kind_precision(scores, kinds, everyone, KINDS).items():
        result[f"precision_bottom_k_{kind}"] = value
    for kind, value in kind_precision(scores, kinds, labels, KINDS).items():
        result[f"precision_bottom_k_per_class_{kind}"] = value
    # the pool run_moso scored, in the same order (same function, same split)
    pool = build_pool(real, synthetic, 0.2, config.seed)
    if pool.ids != [r["id"] for r in rows]:
        raise RuntimeError("the rebuilt pool does not match the scored one")
    images = pool.image_tensor(config.image_size)
    if args.ceiling_frames:
        result["ceilings"] = ceilings(out, args, seed, real, manifest, pool, images, kinds, config)
    result["surrogate_balanced_accuracy_by_epoch"] = surrogate_accuracy(
        out / f"moso_{form}_{partitions}" / "surrogates", pool, images, config, kinds
    )
    if args.clip_epochs:
        result["whole_filter"] = whole_filter(real, gen, out, args, seed, scores_file)
    return result


def surrogate_accuracy(
    surrogates: Path, pool: Pool, images: torch.Tensor, config: MosoConfig, kinds: np.ndarray
) -> list[float]:
    """Class-balanced accuracy of each epoch's surrogate on the clean pool it was trained on.

    A surrogate that cannot fit its own training data has gradients that carry the label
    more than the image: MoSo then ranks by label, not by content."""
    labels = pool.label_tensor()
    clean = torch.from_numpy(kinds == "")
    folder = surrogates / "partition_0"
    accuracies = []
    for entry in read_index(folder):
        checkpoint = SurrogateCheckpoint(folder / entry["file"], entry["epoch"], entry["lr"])
        model = load_surrogate(checkpoint, len(pool.classes), config)
        with torch.no_grad():
            right = (model(images).argmax(1) == labels) & clean
        per_class = [
            float(right[labels == c].sum() / max(int((clean & (labels == c)).sum()), 1))
            for c in labels.unique()
        ]
        accuracies.append(round(float(np.mean(per_class)), 3))
    return accuracies


def kind_precision(
    scores: np.ndarray, kinds: np.ndarray, groups: np.ndarray, names: tuple[str, ...]
) -> dict[str, float]:
    """Bottom-k precision within each group for each corruption kind, against the clean rows."""
    result = {}
    for kind in names:
        chosen = np.flatnonzero((kinds == kind) | (kinds == ""))
        result[kind] = bottom_k_precision(scores[chosen], (kinds == kind)[chosen], groups[chosen])
    return result


def ceilings(
    out: Path,
    args,
    seed: int,
    real: Path,
    manifest: dict,
    pool: Pool,
    images: torch.Tensor,
    kinds: np.ndarray,
    config: MosoConfig,
) -> dict:
    """How well could anything rank wrong-class (and noise) images at the bottom here?"""
    phantom_config = phantom(args, seed)
    meta_file = metadata_path(real)
    attributes = {f"real:{r.file_name}": r.attributes for r in read_metadata(meta_file)}
    for image_id, row in manifest.items():
        attributes[image_id] = row.get("true_attributes") or row.get("attributes") or {}
    labels = np.array(pool.labels)
    difficulty, prevalence = phantom_config.difficulty, phantom_config.prevalence
    oracle = np.array(
        [
            class_posterior(attributes[i], difficulty, prevalence)[label]
            for i, label in zip(pool.ids, pool.labels)
        ]
    )
    result = {"attribute_oracle": kind_precision(oracle, kinds, labels, ("wrong_class",))}
    reference = build_phantom_dataset(
        out / "ceiling_real",
        args.ceiling_frames,
        args.size,
        seed + 2000,
        phantom(args, seed + 2000),
    )
    clean = build_pool(reference, [], 0.0, seed)
    if clean.classes != pool.classes:
        raise ValueError(f"{args.ceiling_frames} frames hold classes {clean.classes}, not all")
    clean_config = replace(config, epochs=args.ceiling_epochs)
    checkpoints = train_surrogate(
        clean.image_tensor(config.image_size),
        clean.label_tensor(),
        len(clean.classes),
        clean_config,
        out / "ceiling_surrogate",
        seed=seed,
    )
    model = load_surrogate(checkpoints[-1], len(clean.classes), clean_config)
    targets = pool.label_tensor()
    with torch.no_grad():
        log_p = F.log_softmax(model(images), dim=1)
    own = log_p[torch.arange(len(targets)), targets].numpy()
    result["clean_classifier"] = kind_precision(own, kinds, labels, ("wrong_class", "noise"))
    result["clean_classifier"]["frames"] = args.ceiling_frames
    result["clean_classifier"]["epochs"] = args.ceiling_epochs
    return result


def whole_filter(real: Path, gen: Path, out: Path, args, seed: int, moso_file: Path) -> dict:
    """The pipeline's filter on the synthetic images: what each rule drops, by corruption."""
    clip_config = ClipConfig(epochs=args.clip_epochs, image_size=args.size, seed=seed)
    model_dir = train_clip(real, out / "clip", clip_config)
    run_clip_score(model_dir, gen / "manifest.jsonl", out / "clip_scores", seed=seed)
    config = FilterConfig(clip_quantile=args.clip_quantile, moso_prune_ratio=args.moso_prune_ratio)
    clip_file = out / "clip_scores" / "clip_scores.jsonl"
    run_filter(gen / "manifest.jsonl", out / "filtered", config, clip_file, moso_file, real)
    rows = [json.loads(line) for line in (out / "filtered" / "manifest.jsonl").open()]
    kinds = np.array([row.get("corruption", "") or "clean" for row in rows])
    labels = np.array([row["label"] for row in rows])
    clip_values = np.array([row["clip_score"] for row in rows])
    reasons = np.array([row["drop_reason"] for row in rows])
    bad = kinds != "clean"
    dropped = reasons != ""
    percentile = clip_values.argsort().argsort() / (len(clip_values) - 1)
    report: dict = {
        "filter": config.__dict__,
        "synthetic": len(rows),
        "dropped": int(dropped.sum()),
        "precision_of_dropped": float(bad[dropped].mean()) if dropped.any() else None,
        # a filter dropping the same number at random catches this fraction of each kind
        "recall_random_filter": float(dropped.mean()),
        "clip_bottom_k_precision_per_class": bottom_k_precision(clip_values, bad, labels),
        "clip_mean_percentile": {
            kind: float(percentile[kinds == kind].mean()) for kind in np.unique(kinds)
        },
    }
    for kind in np.unique(kinds):
        members = kinds == kind
        report[kind] = {
            "n": int(members.sum()),
            "dropped_fraction": float(dropped[members].mean()),
            "dropped_by": {
                reason: int((reasons[members] == reason).sum())
                for reason in sorted(set(reasons[members]))
                if reason
            },
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_moso_validation"))
    parser.add_argument("--n-real", type=int, default=240)
    parser.add_argument("--n-synthetic", type=int, default=120)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--wrong-class", type=int, default=12)
    parser.add_argument("--noise", type=int, default=12)
    parser.add_argument("--duplicates", type=int, default=12)
    parser.add_argument(
        "--noise-labels",
        choices=("sampled", "uniform"),
        default="sampled",
        help="noise rows take a random clean row's label, or a uniformly drawn class",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--forms", default="exact,first_order")
    parser.add_argument("--difficulty", type=float, default=None, help="phantom (default: its own)")
    parser.add_argument("--partitions", dest="partition_counts", default="1,2")
    parser.add_argument("--clip-epochs", type=int, default=0, help="> 0: evaluate the whole filter")
    parser.add_argument(
        "--ceiling-frames", type=int, default=600, help="clean frames for the ceiling; 0: skip"
    )
    parser.add_argument("--ceiling-epochs", type=int, default=30)
    parser.add_argument("--clip-quantile", type=float, default=0.2, help="the quick profile's")
    parser.add_argument("--moso-prune-ratio", type=float, default=0.2, help="the quick profile's")
    # every other MosoConfig field (--epochs, --width, --no-balanced, --sampled-checkpoints, ...)
    add_dataclass_options(parser, MosoConfig, skip=("image_size", "seed", "form", "partitions"))
    args = parser.parse_args()
    enforce_offline(args.out)
    results = {}
    for form in args.forms.split(","):
        for partitions in [int(p) for p in args.partition_counts.split(",")]:
            runs = [
                run_once(args.out / f"seed{s}", args, s, form, partitions)
                for s in range(args.seeds)
            ]
            key = f"{form}/partitions={partitions}"
            results[key] = summarise(runs)
            print(key, json.dumps(results[key], indent=1), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


def summarise(runs: list[dict]) -> dict:
    summary: dict = {"runs": runs}
    for key in runs[0]:
        if key.startswith("precision") or key == "random_expectation":
            values = np.array([run[key] for run in runs])
            summary[key] = {
                "mean": float(values.mean()),
                "min": float(values.min()),
                "max": float(values.max()),
            }
    if "ceilings" in runs[0]:
        summary["ceilings"] = {
            name: {
                kind: float(np.mean([run["ceilings"][name][kind] for run in runs]))
                for kind in runs[0]["ceilings"][name]
            }
            for name in runs[0]["ceilings"]
        }
    if "whole_filter" in runs[0]:
        filters = [run["whole_filter"] for run in runs]
        summary["whole_filter"] = {
            key: float(np.mean([f[key] for f in filters]))
            for key in (
                "precision_of_dropped",
                "recall_random_filter",
                "clip_bottom_k_precision_per_class",
            )
        }
        for kind in ("clean", "wrong_class", "noise", "duplicate"):
            values = [f[kind]["dropped_fraction"] for f in filters if kind in f]
            if values:
                summary["whole_filter"][f"dropped_fraction_{kind}"] = float(np.mean(values))
    return summary


if __name__ == "__main__":
    main()
