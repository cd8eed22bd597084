"""Issue 18's untried lever: the filtered pool restricted to one generation mode.

The CLIP + MoSo filter keeps more reference-mode images than diversify-mode ones (long profile:
57% of FTC's filtered pool, 64% of MTC's), and reference images are often near-copies of a
train frame. This trains the filtered arm again from one mode's kept images only, with the same
seeds, counts and recipe as the finished run, and pairs it with that run's own real-only,
duplicated-real and both-modes filtered trainings (hard-linked, not re-trained) on the
independent test set, CIs over test cases and seeds.

    python -m benchmarks.filter_mode_lever --run runs/long --subtype FTC --mode diversify \\
        --out benchmarks/results/filter_mode_long_FTC_diversify.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from classifier.config import load_experiment_config
from classifier.experiment import EXTERNAL_SPLIT, PREDICTIONS_FILE, run_experiment, summarize
from classifier.metrics import paired_difference
from metadata.atomic import write_json, write_jsonl

CONTROLS = ("real", "dup_real")
BOTH_MODES = "filtered_both_modes"


def mode_manifest(source: Path, mode: str, out: Path) -> int:
    """The filter's manifest with only `mode`'s rows (kept flags unchanged); its kept count."""
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    chosen = [row for row in rows if row.get("mode") == mode]
    if not chosen:
        raise SystemExit(f"{source}: no row of mode {mode!r}")
    write_jsonl(out, chosen)
    return sum(bool(row.get("kept")) for row in chosen)


def link_run(source: Path, target: Path) -> None:
    """A finished training, hard-linked (no copy, no re-training)."""
    if not (source / PREDICTIONS_FILE).is_file():
        raise SystemExit(f"{source}: not a finished training")
    if not target.exists():
        shutil.copytree(source, target, copy_function=os.link)


def scores_of(root: Path, arm: str, seeds: tuple[int, ...]) -> np.ndarray:
    rows = []
    for seed in seeds:
        predictions = json.loads((root / arm / f"seed_{seed}" / PREDICTIONS_FILE).read_text())
        rows.append(predictions[EXTERNAL_SPLIT]["scores"])
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="a finished long `tiger run`")
    parser.add_argument("--subtype", required=True)
    parser.add_argument("--mode", required=True, choices=["diversify", "reference"])
    parser.add_argument("--work", type=Path, default=Path("runs/filter_mode_lever"))
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.cpu_threads)

    stage = args.run / "classifier"
    main_root = stage / args.subtype
    config = load_experiment_config(stage / f"{args.subtype}.experiment.json")
    lever_stage = args.work / args.mode
    manifest = lever_stage / f"{args.subtype}_{args.mode}_filtered.jsonl"
    if not isinstance(config.mix.filtered_manifest, str):
        raise SystemExit("the run's filtered manifest is a list; name one manifest")
    kept = mode_manifest(Path(config.mix.filtered_manifest), args.mode, manifest)
    config = replace(
        config,
        arms=("real", "dup_real", "synthetic_filtered"),
        ratios=(),
        mix=replace(
            config.mix,
            filtered_manifest=str(manifest),
            unfiltered_manifest="",
            clip_only_manifest="",
            coarse_only_manifest="",
        ),
        run_dir=str(lever_stage),
    )
    root = lever_stage / args.subtype
    for arm in CONTROLS:
        for seed in config.seeds:
            link_run(main_root / arm / f"seed_{seed}", root / arm / f"seed_{seed}")
    results = run_experiment(config)
    main_counts = json.loads((main_root / "experiment.json").read_text())["extra_per_class"]
    if results["setup"]["extra_per_class"] != {int(c): n for c, n in main_counts.items()}:
        raise SystemExit(
            f"counts {results['setup']['extra_per_class']} differ from the run's {main_counts}:"
            " the linked controls would not be count-matched"
        )
    for seed in config.seeds:
        link_run(
            main_root / "synthetic_filtered" / f"seed_{seed}", root / BOTH_MODES / f"seed_{seed}"
        )

    runs = {arm: results["runs"][arm] for arm in config.arms}
    runs[BOTH_MODES] = {seed: runs["synthetic_filtered"][seed] for seed in config.seeds}
    arms = summarize(config, runs, root, EXTERNAL_SPLIT)["arms"]
    first = json.loads((root / "real" / f"seed_{config.seeds[0]}" / PREDICTIONS_FILE).read_text())
    labels = np.array(first[EXTERNAL_SPLIT]["labels"])
    groups = np.array(first[EXTERNAL_SPLIT]["case_ids"])
    vs_both = paired_difference(
        labels,
        scores_of(root, "synthetic_filtered", config.seeds),
        scores_of(root, BOTH_MODES, config.seeds),
        config.eval.n_bootstrap,
        config.eval.ci,
        config.eval.seed,
        groups,
        resample_seeds=True,
    )
    report = {
        "run": str(args.run),
        "subtype": args.subtype,
        "mode": args.mode,
        "kept_in_mode": kept,
        "extra_per_class": results["setup"]["extra_per_class"],
        "seeds": list(config.seeds),
        "test_set": "independent",
        "arms": {
            arm: {
                "auc": row["auc"],
                "ci95": [row["auc_low"], row["auc_high"]],
                "seed_aucs": row["seed_aucs"],
                **(
                    {
                        "vs_dup_real": {
                            "delta": row["dup_delta_auc"],
                            "ci95": [row["dup_delta_low"], row["dup_delta_high"]],
                            "p": row["dup_delta_p"],
                        }
                    }
                    if "dup_delta_auc" in row
                    else {}
                ),
            }
            for arm, row in arms.items()
        },
        "mode_only_vs_both_modes": {
            "delta": vs_both.value,
            "ci95": [vs_both.low, vs_both.high],
            "p": vs_both.p_value,
        },
    }
    write_json(args.out, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
