"""The finished main arms of a classifier stage that is still running, on the independent set.

A long run's classifier stage writes results.json only when every arm, seed and ratio is done.
This scores the arms whose every seed has finished, with the stage's own `summarize` (seed-mean
AUC, bootstrap CI over cases, paired ΔAUC against real only and duplicated real), so a stopped
session can report what is already measured. The final numbers come from the stage itself. On a
finished stage it re-scores the arms with today's `summarize` (e.g. after a change to the CIs).

    python -m benchmarks.interim_arms --run runs/long --subtype FTC \\
        --out benchmarks/results/interim_arms_long_FTC.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from classifier.config import load_experiment_config
from classifier.experiment import EXTERNAL_SPLIT, METRICS_FILE, summarize
from metadata.atomic import write_json


def finished_runs(root: Path, arms: tuple[str, ...], seeds: tuple[int, ...]) -> dict:
    """{arm: {seed: metrics}} for the arms whose every seed has its metrics file."""
    runs = {}
    for arm in arms:
        files = {seed: root / arm / f"seed_{seed}" / METRICS_FILE for seed in seeds}
        if all(path.is_file() for path in files.values()):
            runs[arm] = {seed: json.loads(path.read_text()) for seed, path in files.items()}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="a `tiger run` folder")
    parser.add_argument("--subtype", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--split",
        default=EXTERNAL_SPLIT,
        choices=[EXTERNAL_SPLIT, "test"],
        help="the independent test set (default) or the split's own (a run without one: DDTI)",
    )
    args = parser.parse_args()
    folder = Path(args.run) / "classifier"
    config = load_experiment_config(folder / f"{args.subtype}.experiment.json")
    root = folder / args.subtype
    runs = finished_runs(root, tuple(config.arms), tuple(config.seeds))
    if "real" not in runs:
        raise SystemExit(f"{root}: the real-only arm has not finished every seed yet")
    arms = summarize(config, runs, root, args.split)["arms"]
    keys = ("auc", "auc_low", "auc_high", "auc_sd_over_seeds", "seed_aucs")
    keys += ("delta_auc", "delta_low", "delta_high", "delta_p")
    keys += ("dup_delta_auc", "dup_delta_low", "dup_delta_high", "dup_delta_p")
    report = {
        "run": args.run,
        "subtype": args.subtype,
        "split": args.split,
        "seeds": list(config.seeds),
        "interim": "arms with every seed finished, scored with today's summarize"
        + ("" if (root / "results.json").is_file() else "; the stage was still running"),
        "arms": {arm: {k: row[k] for k in keys if k in row} for arm, row in arms.items()},
    }
    write_json(Path(args.out), report)
    for arm, row in report["arms"].items():
        dup = row.get("dup_delta_auc")
        versus = "" if dup is None else f"  vs dup_real {dup:+.3f} p={row['dup_delta_p']:.3f}"
        print(f"{arm:20s} {row['auc']:.3f} [{row['auc_low']:.3f}, {row['auc_high']:.3f}]{versus}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
