"""MoSo per-sample gradients: batched torch.func (vmap over grad) vs the reference's
one-sample-at-a-time loop, on the same surrogate checkpoint and the same pool, in one run.

Reports wall time, speed ratio and the Spearman correlation of the resulting MoSo scores
(batched-full vs loop-full should be ~1: same numbers; last-layers vs full measures what the
cheaper restriction loses).

    python -m benchmarks.bench_moso_speed --out runs/bench_moso_speed
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from scipy import stats

from generation.filtering.manifest import read_manifest
from generation.filtering.moso_params import MosoConfig
from generation.filtering.moso_pool import build_pool
from generation.filtering.moso_score import checkpoint_scores
from generation.filtering.moso_surrogate import last_layer_parameters
from generation.filtering.moso_train import load_surrogate, train_surrogate
from generation.filtering.standin import dataset_as_manifest
from generation.offline import enforce_offline
from metadata.importers.phantom import build_phantom_dataset


def timed(function, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_moso_speed"))
    parser.add_argument("--n-real", type=int, default=200)
    parser.add_argument("--n-synthetic", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--last-layers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    enforce_offline(args.out)
    torch.set_num_threads(args.threads)
    real = build_phantom_dataset(args.out / "real", args.n_real, args.size, seed=0)
    synthetic = build_phantom_dataset(args.out / "syn_src", args.n_synthetic, args.size, seed=1)
    dataset_as_manifest(synthetic, args.out / "gen")
    pool = build_pool(real, read_manifest(args.out / "gen"), 0.2, seed=0)
    config = MosoConfig(image_size=args.size, epochs=args.epochs)
    images, labels = pool.image_tensor(args.size), pool.label_tensor()
    checkpoints = train_surrogate(
        images, labels, len(pool.classes), config, args.out / "surrogate", seed=0
    )
    model = load_surrogate(checkpoints[len(checkpoints) // 2], len(pool.classes), config)
    every = last_layer_parameters(model, None)
    last = last_layer_parameters(model, args.last_layers)
    runs = {}
    for name, names, method in (
        ("loop_full", every, "loop"),
        ("vmap_full", every, "vmap"),
        ("loop_last", last, "loop"),
        ("vmap_last", last, "vmap"),
    ):
        seconds, scores = timed(
            lambda names=names, method=method: checkpoint_scores(
                model, images, labels, names, "exact", method, config.chunk_size
            ),
            args.repeats,
        )
        runs[name] = (seconds, scores)
        print(f"{name}: {seconds:.2f} s for {len(images)} samples", flush=True)

    def spearman(a: str, b: str) -> float:
        return float(stats.spearmanr(runs[a][1].numpy(), runs[b][1].numpy()).statistic)

    result = {
        "samples": len(images),
        "parameters_full": sum(dict(model.named_parameters())[n].numel() for n in every),
        "parameters_last": sum(dict(model.named_parameters())[n].numel() for n in last),
        "threads": args.threads,
        "seconds": {name: seconds for name, (seconds, _) in runs.items()},
        "speedup_vmap_full_vs_loop_full": runs["loop_full"][0] / runs["vmap_full"][0],
        "speedup_vmap_last_vs_loop_full": runs["loop_full"][0] / runs["vmap_last"][0],
        "speedup_vmap_last_vs_loop_last": runs["loop_last"][0] / runs["vmap_last"][0],
        "spearman_vmap_full_vs_loop_full": spearman("vmap_full", "loop_full"),
        "spearman_vmap_last_vs_loop_full": spearman("vmap_last", "loop_full"),
        "max_abs_diff_vmap_vs_loop_full": float(
            (runs["vmap_full"][1] - runs["loop_full"][1]).abs().max()
        ),
    }
    print(json.dumps(result, indent=2))
    (args.out / "results.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
