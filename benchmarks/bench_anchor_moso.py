"""MoSo: our estimator against the reference one-sample-at-a-time estimator, same pool.

The reference (hrtan/MoSo) computes each sample's gradient with its own forward and backward
pass. Both sides here score the same pool (real phantom train frames + frames of another
phantom seed standing in for synthetic ones) with the same trained surrogate and the same
sampled checkpoints, so the only difference is how the per-sample gradients are computed:

- reference: `loop` over every parameter (what the reference code does);
- vmap / hooks: our two batched methods over every parameter (the same numbers);
- last_k: gradients of the last k layers only, a cheaper estimator whose agreement with the
  reference is measured, not assumed.

Timings alternate between methods, medians over repeats; Spearman is against the reference's
summed scores. The surrogate training, which every method shares, is timed once and reported.

The ceiling: every exact estimator needs each sample's own forward and backward pass at every
checkpoint, so no exact method can beat one batched forward + backward of the whole pool (the
summed loss, no per-sample gradient at all), nor a batched forward alone. Both are timed beside
the methods, in the same chunks, and reported as the largest speed-up over the reference that
any exact method could reach on this machine.

    python -m benchmarks.bench_anchor_moso --out runs/anchor_moso
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from benchmarks.anchors import environment_note, record_anchor, write_result
from generation.filtering.manifest import read_manifest
from generation.filtering.moso_params import MosoConfig
from generation.filtering.moso_pool import build_pool
from generation.filtering.moso_run import sample_checkpoints
from generation.filtering.moso_score import checkpoint_scores
from generation.filtering.moso_surrogate import last_layer_parameters
from generation.filtering.moso_train import load_surrogate, train_surrogate
from generation.filtering.standin import dataset_as_manifest
from metadata.importers.phantom import build_phantom_dataset


def score(checkpoints, images, labels, classes, config, method, last_layers) -> np.ndarray:
    """Summed, learning-rate-weighted MoSo over the sampled checkpoints (one partition)."""
    total = np.zeros(images.shape[0])
    for checkpoint in checkpoints:
        model = load_surrogate(checkpoint, classes, config)
        names = last_layer_parameters(model, last_layers)
        values = checkpoint_scores(
            model, images, labels, names, config.form, method, config.chunk_size
        )
        total += checkpoint.lr * values.numpy()
    return total


def batched_passes(checkpoints, images, labels, classes, config, backward: bool) -> None:
    """The ceiling's work: the whole pool through each checkpoint in batches, no per-sample
    gradient (with `backward`, the gradient of the summed loss)."""
    for checkpoint in checkpoints:
        model = load_surrogate(checkpoint, classes, config).eval()
        params = list(model.parameters())
        for start in range(0, images.shape[0], config.chunk_size):
            batch = images[start : start + config.chunk_size]
            target = labels[start : start + config.chunk_size]
            with torch.set_grad_enabled(backward):
                loss = torch.nn.functional.cross_entropy(model(batch), target, reduction="sum")
            if backward:
                torch.autograd.grad(loss, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/anchor_moso"))
    parser.add_argument("--n-real", type=int, default=400)
    parser.add_argument("--n-synthetic", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    from generation.offline import enforce_offline

    enforce_offline(args.out)
    torch.set_num_threads(args.threads)
    config = MosoConfig(epochs=6)  # the quick profile's surrogate, at its 64 px
    real = args.out / "real"
    if not real.is_dir():
        build_phantom_dataset(real, args.n_real, 128, seed=0)
        synthetic = build_phantom_dataset(args.out / "syn_src", args.n_synthetic, 128, seed=1)
        dataset_as_manifest(synthetic, args.out / "gen")
    pool = build_pool(real, read_manifest(args.out / "gen"), 0.2, seed=0)
    images, labels = pool.image_tensor(config.image_size), pool.label_tensor()
    classes = len(pool.classes)
    started = time.perf_counter()
    trained = train_surrogate(
        images, labels, classes, config, args.out / f"surrogate_{time.time_ns()}", config.seed
    )
    training_seconds = time.perf_counter() - started
    checkpoints = sample_checkpoints(trained, config.sampled_checkpoints, config.seed * 7919)
    variants = {
        "reference_loop": ("loop", None),
        "vmap": ("vmap", None),
        "hooks": ("hooks", None),
        "hooks_last_1": ("hooks", 1),
        "hooks_last_2": ("hooks", 2),
        "hooks_last_4": ("hooks", 4),
    }
    bounds = {"batched_forward_backward": True, "batched_forward": False}
    seconds: dict[str, list[float]] = {name: [] for name in [*variants, *bounds]}
    scores: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, (method, last) in variants.items():
            begun = time.perf_counter()
            scores[name] = score(checkpoints, images, labels, classes, config, method, last)
            seconds[name].append(time.perf_counter() - begun)
            print(name, round(seconds[name][-1], 2), "s", flush=True)
        for name, backward in bounds.items():
            begun = time.perf_counter()
            batched_passes(checkpoints, images, labels, classes, config, backward)
            seconds[name].append(time.perf_counter() - begun)
            print(name, round(seconds[name][-1], 2), "s", flush=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    reference = scores["reference_loop"]
    rows = {
        name: {
            "seconds": medians[name],
            "speedup_vs_reference": medians["reference_loop"] / medians[name],
            "spearman_vs_reference": float(stats.spearmanr(scores[name], reference).statistic),
            "max_abs_diff_vs_reference": float(np.abs(scores[name] - reference).max()),
        }
        for name in variants
    }
    exact = [n for n in ("vmap", "hooks") if rows[n]["spearman_vs_reference"] >= 0.99]
    default = config.gradients
    result = {
        "pool": len(pool.ids),
        "checkpoints_scored": len(checkpoints),
        "surrogate_training_seconds": training_seconds,
        "profile_default_method": default,
        "variants": rows,
        "whole_estimator_speedup_vs_reference": (training_seconds + medians["reference_loop"])
        / (training_seconds + medians[default]),
        "exact_methods": exact,
        # the most any exact estimator could gain over the reference here (module note)
        "ceiling_speedup_vs_reference": {
            name: medians["reference_loop"] / medians[name] for name in bounds
        },
        "bound_seconds": {name: medians[name] for name in bounds},
        "setup": {"image_size": config.image_size, "repeats": args.repeats, **environment_note()},
    }
    write_result(args.results / "anchor_moso.json", result)
    record_anchor(
        "moso_vs_reference",
        {
            "ratio": round(rows[default]["speedup_vs_reference"], 3),
            "spearman": round(rows[default]["spearman_vs_reference"], 5),
            "method": default,
        },
        args.results / "anchor_speed.json",
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
