"""Domain-CLIP score distributions on the phantom: real held-out pairs, matched synthetic pairs
and mismatched synthetic pairs (same images, another image's text), with the paired test.

The "synthetic" set is a stand-in (a phantom from another seed, written as a synthetic
manifest) until the generation stage exists. Trains the CPU-default CLIP first.

    python -m benchmarks.clip_distributions --out runs/clip_distributions
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from generation.filtering.clip_params import ClipConfig
from generation.filtering.clip_train import train_clip
from generation.filtering.commands import run_clip_score
from generation.filtering.standin import dataset_as_manifest
from generation.offline import enforce_offline
from metadata.importers.phantom import build_phantom_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/clip_distributions"))
    parser.add_argument("--n-real", type=int, default=400)
    parser.add_argument("--n-synthetic", type=int, default=120)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=ClipConfig.epochs)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    enforce_offline(args.out)
    torch.set_num_threads(args.threads)
    real = build_phantom_dataset(args.out / "real", args.n_real, args.size, seed=0)
    synthetic = build_phantom_dataset(args.out / "syn_src", args.n_synthetic, args.size, seed=1)
    dataset_as_manifest(synthetic, args.out / "gen")
    started = time.time()
    model = train_clip(real, args.out / "clip", ClipConfig(epochs=args.epochs))
    train_seconds = time.time() - started
    report = run_clip_score(model, args.out / "gen", args.out / "scores")
    report["train_seconds"] = train_seconds
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    for key in (
        "real_held_out_matched",
        "real_held_out_mismatched",
        "synthetic_matched",
        "synthetic_mismatched",
    ):
        part = report.get(key, {})
        print(f"{key}: n={part.get('n')} mean={part.get('mean'):.2f} CI={part.get('mean_ci95')}")
    for key in ("real_matched_vs_mismatched", "matched_vs_mismatched"):
        print(key, json.dumps(report.get(key), indent=1))


if __name__ == "__main__":
    main()
