"""Scoring an experiment: each run's bootstrap AUCs once (`summarize`) against once per use.

The baseline is what `summarize` did before: `auc_ci` for every arm and `paired_difference` for
every arm against real only and against duplicated real, each call re-scoring both arms on every
test resample. The candidate is today's `summarize`, which scores each run's [resample, seed]
AUC matrix once and lets the CI and both deltas read it. Both run here, one after the other, on
the same finished trainings; the numbers must be identical (same resamples, same seed draws),
and the benchmark fails if any differs.

    python -m benchmarks.summarize_speed --stage runs/long/classifier --subtype FTC \\
        --out benchmarks/results/summarize_speed_long_FTC.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.interim_arms import finished_runs
from classifier.config import ExperimentConfig, load_experiment_config
from classifier.experiment import EXTERNAL_SPLIT, PREDICTIONS_FILE, summarize
from classifier.metrics import auc_ci, paired_difference
from metadata.atomic import write_json


def baseline(config: ExperimentConfig, scores: dict, labels, groups) -> dict:
    """Every estimate computed from the scores by the one-call functions (no sharing)."""
    settings = (config.eval.n_bootstrap, config.eval.ci, config.eval.seed, groups)
    rows = {}
    for arm, arm_scores in scores.items():
        estimate = auc_ci(labels, arm_scores, *settings, resample_seeds=True)
        row = {"auc": estimate.value, "auc_low": estimate.low, "auc_high": estimate.high}
        for prefix, control in (("delta", "real"), ("dup_delta", "dup_real")):
            if control not in scores or arm in {control, "real"}:
                continue
            delta = paired_difference(
                labels, arm_scores, scores[control], *settings, resample_seeds=True
            )
            row.update(
                {
                    f"{prefix}_auc": delta.value,
                    f"{prefix}_low": delta.low,
                    f"{prefix}_high": delta.high,
                    f"{prefix}_p": delta.p_value,
                }
            )
        rows[arm] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", required=True, help="a run's classifier/ folder")
    parser.add_argument("--subtype", required=True)
    parser.add_argument("--split", default=EXTERNAL_SPLIT, choices=[EXTERNAL_SPLIT, "test"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    stage = Path(args.stage)
    config = load_experiment_config(stage / f"{args.subtype}.experiment.json")
    root = stage / args.subtype
    runs = finished_runs(root, tuple(config.arms), tuple(config.seeds))
    if "real" not in runs:
        raise SystemExit(f"{root}: the real-only arm has not finished every seed")

    start = time.perf_counter()
    shared = summarize(config, runs, root, args.split)
    candidate_s = time.perf_counter() - start

    scores = {arm: np.array(rows) for arm, rows in shared["scores"].items()}
    first = next(iter(runs))  # the split's labels and cases, the same in every run
    predictions = (root / first / f"seed_{min(runs[first])}" / PREDICTIONS_FILE).read_text()
    test = json.loads(predictions)[args.split]
    labels, groups = np.array(test["labels"]), np.array(test["case_ids"])
    start = time.perf_counter()
    reference = baseline(config, scores, labels, groups)
    baseline_s = time.perf_counter() - start

    differing = [
        f"{arm}.{key}"
        for arm, row in reference.items()
        for key, value in row.items()
        if shared["arms"][arm][key] != value
    ]
    result = {
        "stage": str(root),
        "split": args.split,
        "arms": len(runs),
        "seeds": len(config.seeds),
        "test_frames": len(labels),
        "n_bootstrap": config.eval.n_bootstrap,
        "baseline_s": round(baseline_s, 2),
        "shared_matrices_s": round(candidate_s, 2),
        "speedup": round(baseline_s / candidate_s, 2),
        "identical": not differing,
        "differing": differing,
    }
    write_json(Path(args.out), result)
    print(result)
    if differing:
        raise SystemExit(f"the two scorings differ: {differing}")


if __name__ == "__main__":
    main()
