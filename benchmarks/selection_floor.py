"""Model selection from epoch 1 against selection from `train.min_epochs`, same arms and seeds.

Two classifier stages of one run (the same images, splits, seeds and recipe except the floor):
per arm the seed-mean AUC on the independent set (or, `--split test`, the split's own) with
its CI over test cases and seeds, the spread over seeds, and how many trainings picked their
epoch-1 model. The ratios (after/before) say what the floor does to the seed spread and to the
AUC.

    python -m benchmarks.selection_floor --subtype FTC \\
        --before runs/long_selection_v1_classifier --after runs/long/classifier \\
        --out benchmarks/results/selection_floor_long_FTC.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.interim_arms import finished_runs
from classifier.config import load_experiment_config
from classifier.experiment import EXTERNAL_SPLIT, summarize
from metadata.atomic import write_json


def score_stage(
    folder: Path, subtype: str, arms: tuple[str, ...], split: str = EXTERNAL_SPLIT
) -> dict:
    """Per arm: AUC, CI, seed spread, ΔAUC vs duplicated real, and the epochs each seed picked."""
    config = load_experiment_config(folder / f"{subtype}.experiment.json")
    root = folder / subtype
    runs = finished_runs(root, arms, tuple(config.seeds))
    summary = summarize(config, runs, root, split)["arms"]
    rows = {}
    for arm, row in summary.items():
        rows[arm] = {
            "auc": row["auc"],
            "ci95": [row["auc_low"], row["auc_high"]],
            "sd_over_seeds": row["auc_sd_over_seeds"],
            "seed_aucs": row["seed_aucs"],
            "best_epochs": [runs[arm][seed]["best_epoch"] for seed in sorted(runs[arm])],
            "min_epochs": config.train.min_epochs,
        }
        if "dup_delta_auc" in row:
            rows[arm]["delta_vs_dup_real"] = {
                "delta": row["dup_delta_auc"],
                "ci95": [row["dup_delta_low"], row["dup_delta_high"]],
                "p": row["dup_delta_p"],
            }
    return rows


def overall(rows: dict) -> dict:
    aucs = [value for row in rows.values() for value in row["seed_aucs"]]
    epochs = [value for row in rows.values() for value in row["best_epochs"]]
    return {
        "trainings": len(aucs),
        "mean_auc": float(np.mean(aucs)),
        "mean_sd_over_seeds": float(np.mean([row["sd_over_seeds"] for row in rows.values()])),
        "epoch_1_picks": sum(epoch == 1 for epoch in epochs),
        "epoch_1_mean_auc": float(np.mean([a for a, e in zip(aucs, epochs) if e == 1]))
        if 1 in epochs
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="classifier stage folder")
    parser.add_argument("--after", type=Path, required=True, help="classifier stage folder")
    parser.add_argument("--subtype", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--split",
        default=EXTERNAL_SPLIT,
        choices=[EXTERNAL_SPLIT, "test"],
        help="the independent test set (default) or the split's own (a run without one: DDTI)",
    )
    args = parser.parse_args()
    after_config = load_experiment_config(args.after / f"{args.subtype}.experiment.json")
    before = score_stage(args.before, args.subtype, tuple(after_config.arms), args.split)
    after = score_stage(args.after, args.subtype, tuple(before), args.split)
    before = {arm: before[arm] for arm in after}  # arms finished in both
    totals = {"before": overall(before), "after": overall(after)}
    report = {
        "subtype": args.subtype,
        "split": args.split,
        "arms": {arm: {"before": before[arm], "after": after[arm]} for arm in after},
        "overall": totals,
        "ratio_after_before": {
            "mean_auc": totals["after"]["mean_auc"] / totals["before"]["mean_auc"],
            "mean_sd_over_seeds": totals["after"]["mean_sd_over_seeds"]
            / totals["before"]["mean_sd_over_seeds"],
        },
    }
    write_json(args.out, report)
    for arm, pair in report["arms"].items():
        line = f"{arm:20s}"
        for name in ("before", "after"):
            row = pair[name]
            line += f"  {name} {row['auc']:.3f} sd {row['sd_over_seeds']:.3f} {row['best_epochs']}"
        print(line)
    print(totals, report["ratio_after_before"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
