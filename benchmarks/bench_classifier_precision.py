"""Classifier training on a CPU: bf16 autocast + channels_last against fp32 NCHW, same arms.

The quick profile's classifier stage trains nine arms per subtype (ResNet-18, 64 px, 12 epochs) and
was the largest part of a default run after the coarse model. On a CPU, `mixed_precision="bf16"`
trains under bf16 autocast with channels_last (opt-in: "auto" keeps fp32 there, because of what this
measured). This runs the same arms of a finished run's experiment in both precisions, one arm at a
time with the order alternating, and reports seconds per arm, the ratio, and each arm's AUC on the
split's test set and on the independent test set with 95% CIs, plus the paired bootstrap difference
bf16 - fp32 on the same test cases: the speed-up counts only if the results hold.

    python -m benchmarks.bench_classifier_precision --run runs/quick --subtype FTC
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.anchors import environment_note, write_result
from classifier.config import load_experiment_config
from classifier.data import ImageCache
from classifier.evaluate import EXTERNAL_SPLIT, PREDICTIONS_FILE
from classifier.experiment import (
    arm_training_set,
    extra_counts,
    load_pools,
    read_external,
    run_one,
)
from classifier.layout import read_layout
from classifier.metrics import auc_ci, paired_difference
from classifier.precision import cpu_has_native_bf16
from classifier.train import STATE_DIR, STATE_FILE

VARIANTS = {"fp32": ("no", False), "bf16": ("bf16", True)}  # mixed precision, channels_last


def split_scores(run_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    predictions = json.loads((run_dir / PREDICTIONS_FILE).read_text())[split]
    labels = np.asarray(predictions["labels"])
    return labels, np.asarray(predictions["scores"]), np.asarray(predictions["case_ids"])


def compare(runs: dict[str, Path], split: str, n_bootstrap: int) -> dict:
    """Each variant's AUC with its case-level CI, and the paired bf16 - fp32 difference."""
    labels, fp32, cases = split_scores(runs["fp32"], split)
    labels_b, bf16, _ = split_scores(runs["bf16"], split)
    assert (labels == labels_b).all(), "the two variants scored different test sets"
    row = {}
    for name, scores in (("fp32", fp32), ("bf16", bf16)):
        estimate = auc_ci(labels, scores, n_bootstrap, 0.95, 0, cases)
        row[name] = {"auc": estimate.value, "ci95": [estimate.low, estimate.high]}
    delta = paired_difference(labels, bf16, fp32, n_bootstrap, 0.95, 0, cases)
    row["delta_bf16_minus_fp32"] = {
        "delta": delta.value,
        "ci95": [delta.low, delta.high],
        "p": delta.p_value,
    }
    row["bf16_inside_fp32_ci"] = (
        row["fp32"]["ci95"][0] <= row["bf16"]["auc"] <= row["fp32"]["ci95"][1]
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, default=Path("runs/quick"))
    parser.add_argument("--subtype", default="FTC")
    parser.add_argument("--arms", nargs="+", default=["real", "dup_real", "synthetic_filtered"])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_classifier_precision"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-bootstrap", type=int, default=2000)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = load_experiment_config(args.run / "classifier" / f"{args.subtype}.experiment.json")
    base = replace(base, arms=tuple(args.arms), seeds=(0,))
    layout = read_layout(base.data.croot, base.data.subtype)
    real_train = [item for item in layout["train"] if item.origin == "real"]
    pools = load_pools(base)
    counts = extra_counts(base, real_train, pools)
    external = read_external(base, layout)
    cache = ImageCache(base.data.image_size)
    seconds: dict[str, dict[str, float]] = {arm: {} for arm in args.arms}
    folders: dict[str, dict[str, Path]] = {arm: {} for arm in args.arms}
    for index, arm in enumerate(args.arms):
        order = list(VARIANTS) if index % 2 == 0 else list(reversed(VARIANTS))
        for variant in order:
            precision, channels_last = VARIANTS[variant]
            config = replace(
                base,
                train=replace(base.train, mixed_precision=precision),
                data=replace(base.data, channels_last=channels_last),
            )
            run_dir = args.out / f"{variant}_{time.time_ns()}" / arm / "seed_0"
            train_items, augmentation = arm_training_set(arm, real_train, pools, counts, 0)
            started = time.perf_counter()
            run_one(
                config, arm, 0, train_items, augmentation, layout["valid"], layout["test"],
                run_dir, cache, external,
            )  # fmt: skip
            seconds[arm][variant] = time.perf_counter() - started
            folders[arm][variant] = run_dir
            print(arm, variant, round(seconds[arm][variant], 1), "s", flush=True)
    rows = {}
    for arm in args.arms:
        epochs = {
            v: len(json.loads((f / STATE_DIR / STATE_FILE).read_text())["history"])
            for v, f in folders[arm].items()
        }
        rows[arm] = {
            "seconds": seconds[arm],
            "epochs_trained": epochs,
            "seconds_per_epoch": {v: seconds[arm][v] / epochs[v] for v in VARIANTS},
            "speedup_bf16_vs_fp32": seconds[arm]["fp32"] / seconds[arm]["bf16"],
            "test": compare(folders[arm], "test", args.n_bootstrap),
        }
        if external:
            rows[arm]["independent_test"] = compare(folders[arm], EXTERNAL_SPLIT, args.n_bootstrap)
    total = {v: sum(seconds[arm][v] for arm in args.arms) for v in VARIANTS}
    result = {
        "run": str(args.run),
        "subtype": args.subtype,
        "cpu_native_bf16": cpu_has_native_bf16(),
        "arms": rows,
        "total_seconds": total,
        "speedup_bf16_vs_fp32": total["fp32"] / total["bf16"],
        "setup": {
            "arch": base.model.arch,
            "image_size": base.data.image_size,
            "epochs": base.train.epochs,
            "patience": base.train.patience,
            **environment_note(),
        },
    }
    write_result(args.results / f"classifier_precision_{args.subtype}.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
