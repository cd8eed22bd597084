"""The experiment's trainings one after another with every thread, against `workers` processes
with the threads shared out (`ExperimentConfig.workers`, classifier/parallel.py).

Both run here, one after the other, on the same layout, arms, seeds and recipe, into fresh run
folders; the ratio of wall times is the speedup. AUCs are reported for both: a training's
numbers can move in the last digits with its thread count, nothing else differs.

    python -m benchmarks.classifier_workers --croot runs/long/data/classifier --subtype FTC \\
        --out benchmarks/results/classifier_workers_long_FTC.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from classifier.config import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    MixConfig,
    ModelConfig,
    TrainConfig,
)
from classifier.experiment import run_experiment
from metadata.atomic import write_json


def timed(config: ExperimentConfig) -> tuple[float, dict]:
    started = time.perf_counter()
    results = run_experiment(config)
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--croot", required=True, help="a classifier layout")
    parser.add_argument("--subtype", default="FTC")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--arms", nargs="+", default=["real", "classic_aug", "dup_real", "mixup"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=2, help="torch threads in all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    base = ExperimentConfig(
        data=DataConfig(croot=args.croot, subtype=args.subtype, image_size=args.image_size),
        model=ModelConfig(arch="resnet18"),
        train=TrainConfig(
            epochs=args.epochs,
            batch_size=32,
            lr=1e-3,
            patience=4,
            progress=False,
            imbalance="weighted_sampler",
        ),
        eval=EvalConfig(n_bootstrap=200),
        mix=MixConfig(per_class_count=-1 if "dup_real" not in args.arms else 33),
        arms=tuple(args.arms),
        seeds=tuple(args.seeds),
    )
    with tempfile.TemporaryDirectory() as scratch:
        one_seconds, one = timed(replace(base, run_dir=str(Path(scratch) / "one")))
        many_seconds, many = timed(
            replace(base, run_dir=str(Path(scratch) / "many"), workers=args.workers)
        )
    trainings = len(args.arms) * len(args.seeds)
    result = {
        "croot": args.croot,
        "subtype": args.subtype,
        "trainings": trainings,
        "epochs": args.epochs,
        "threads": args.threads,
        "baseline": {"workers": 1, "threads_each": args.threads, "seconds": round(one_seconds, 1)},
        "candidate": {
            "workers": args.workers,
            "threads_each": max(1, args.threads // args.workers),
            "seconds": round(many_seconds, 1),
        },
        "speedup": round(one_seconds / many_seconds, 2),
        "auc": {
            arm: {"one_process": one["arms"][arm]["auc"], "workers": many["arms"][arm]["auc"]}
            for arm in args.arms
        },
    }
    write_json(Path(args.out), result)
    print(result)


if __name__ == "__main__":
    main()
