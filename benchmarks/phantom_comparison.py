"""Issue 18's gain and issue 22's comparison table, read off finished `tiger run` folders.

Every arm's AUC and its paired ΔAUC against real only and against duplicated real (95% CI, p)
come from each task's `classifier/X/results.json`: on the large independent test set when the
run has one (`results["external"]`, the phantom's other seed), else on the split's own test
set (`"test_set"` says which). Writes

- `phantom_gain_<profile>.json`: {LABEL: {arms: {arm: {auc, ci95}}, delta_filtered_vs_dup_real:
  {delta, ci95, p}, seeds, test_frames, test_set, target_met}} (target: ≥ +0.03 with the CI
  above 0);
- `comparison_<profile>.json`: every arm with both deltas, the ratio curve rows, and the
  paper's published AUCs for the arms that match its rows,
- `ratio_curve_<profile>_<LABEL>.png`: each task's ratio curve (the stage's own figure),

and prints the comparison as a markdown table (our rows beside the paper's).

    python -m benchmarks.phantom_comparison --run runs/tiger_long --profile long

With `--finished-runs` a stage still running is read from its finished trainings instead: the
main arms whose every seed is done and the ratio-curve rows whose every seed is done, scored
with the stage's own `summarize`; the files then say `"partial": true` and what is missing.

With `--curve-only` the run's ratio curves replace those in the existing files and nothing else
changes (`ratio_curve_source` names the run): for a run that trained only the arms the curve
needs (`classifier.arms=[real,dup_real,synthetic_filtered]`) to finish a curve beside an arms
table already measured at the same profile.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from benchmarks.interim_arms import finished_runs
from classifier.config import ALL_ARMS, load_experiment_config
from classifier.experiment import (
    EXTERNAL_SPLIT,
    RATIO_ARMS,
    extra_counts,
    ratio_plan,
    real_train_and_pools,
    summarize,
)
from classifier.report import plot_ratio_curve
from metadata.atomic import write_json

# Dai et al. 2025, ResNet50 test AUROC, benign vs FTC / MTC (issue 22), by our matching arm.
PAPER = {
    "real": ("no augmentation", {"FTC": 0.7364, "MTC": 0.7523}),
    "classic_aug": ("basic image manipulation", {"FTC": 0.6872, "MTC": 0.6511}),
    "mixup": ("mixing images", {"FTC": 0.6321, "MTC": 0.6827}),
    "coarse_only": ("Stable Diffusion", {"FTC": 0.7737, "MTC": 0.7582}),
}
GAIN_TARGET = 0.03


def rounded(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def delta(row: dict, prefix: str) -> dict | None:
    if f"{prefix}_auc" not in row:
        return None
    return {
        "delta": rounded(row[f"{prefix}_auc"]),
        "ci95": [rounded(row[f"{prefix}_low"]), rounded(row[f"{prefix}_high"])],
        "p": rounded(row[f"{prefix}_p"]),
    }


def task_summary(results: dict) -> dict:
    """One task's arms on the best test set it has, with both paired deltas."""
    external = "external" in results
    arms = results["external"] if external else results["arms"]
    counts = results["setup"]["external_counts" if external else "real_counts"]
    counts = counts if external else counts["test"]
    rows = {
        arm: {
            "auc": rounded(row["auc"]),
            "ci95": [rounded(row["auc_low"]), rounded(row["auc_high"])],
            "vs_real": delta(row, "delta"),
            "vs_dup_real": delta(row, "dup_delta"),
        }
        for arm, row in arms.items()
    }
    seeds = max(row.get("n_seeds", 1) for row in results["arms"].values())
    return {
        "test_set": "independent" if external else "split",
        "test_frames": sum(int(v) for v in counts.values()),
        "test_positives": int(counts["1"]),
        "seeds": seeds,
        "arms": rows,
    }


def gain_entry(summary: dict) -> dict:
    filtered = summary["arms"].get("synthetic_filtered", {}).get("vs_dup_real")
    met = bool(filtered and filtered["delta"] >= GAIN_TARGET and filtered["ci95"][0] > 0)
    return {
        "arms": {arm: {"auc": r["auc"], "ci95": r["ci95"]} for arm, r in summary["arms"].items()},
        "delta_filtered_vs_dup_real": filtered,
        "seeds": summary["seeds"],
        "test_frames": summary["test_frames"],
        "test_set": summary["test_set"],
        "target_met": met,
    }


def ratio_rows(
    config, root: Path, runs: dict, matrices: dict | None = None
) -> tuple[list[dict], list[str]]:
    """The ratio curve's rows whose every seed has finished (same keys as the stage's), and the
    rows still missing. Which ratio reuses the main arms' runs is the stage's own `ratio_plan`."""
    _, real_train, pools = real_train_and_pools(config)
    plan = ratio_plan(config, real_train, pools, extra_counts(config, real_train, pools))
    rows, missing = [], []
    matrices = {} if matrices is None else matrices
    for ratio, (_, reuses_main) in plan.items():
        for arm in RATIO_ARMS:
            name = f"ratio_{ratio:g}/{arm}"
            reused = reuses_main and arm in runs
            found = {arm: runs[arm]} if reused else finished_runs(root, (name,), config.seeds)
            if not found:
                missing.append(name)
                continue
            folders = {name: arm} if reused else {}
            pair = {"real": runs["real"], name: next(iter(found.values()))}
            row = {"ratio": ratio, "arm": arm, "runs": folders.get(name, name)}
            for prefix, split in (("", "test"), ("external_", EXTERNAL_SPLIT)):
                scored = summarize(config, pair, root, split, folders, matrices)["arms"][name]
                for key in ("auc", "delta_auc", "delta_low", "delta_high", "delta_p"):
                    row[prefix + key] = scored[key]
            rows.append(row)
    return rows, missing


def finished_results(folder: Path, label: str) -> dict:
    """A results.json-shaped dict of one task's finished trainings (`partial`, `missing`)."""
    config = load_experiment_config(folder / f"{label}.experiment.json")
    root = folder / label
    runs = finished_runs(root, tuple(config.arms), tuple(config.seeds))
    if "real" not in runs:
        raise SystemExit(f"{root}: the real-only arm has not finished every seed yet")
    matrices: dict = {}  # each run's bootstrap AUCs, shared by the arms table and the curve
    curve, missing = ratio_rows(config, root, runs, matrices)
    return {
        "setup": json.loads((root / "experiment.json").read_text()),
        "arms": summarize(config, runs, root, matrices=matrices)["arms"],
        EXTERNAL_SPLIT: summarize(config, runs, root, EXTERNAL_SPLIT, matrices=matrices)["arms"],
        "ratio_curve": curve,
        "partial": True,
        "missing": [arm for arm in config.arms if arm not in runs] + missing,
    }


def markdown(comparison: dict) -> str:
    labels = [k for k in comparison if k not in ("paper", "runs")]
    header = "| arm | paper's row | " + " | ".join(
        f"{label} paper | {label} ours [95% CI] | {label} Δ vs dup real" for label in labels
    )
    lines = [header + " |", "|" + " --- |" * (2 + 3 * len(labels))]
    present = comparison[labels[0]]["arms"] if labels else {}
    arms = [arm for arm in ALL_ARMS if arm in present]
    for arm in arms:
        name, paper = PAPER.get(arm, ("—", {}))
        cells = [arm, name]
        for label in labels:
            row = comparison[label]["arms"].get(arm)
            if row is None:  # a partial comparison: this arm has not finished for this task
                cells += [f"{paper[label]:.3f}" if label in paper else "—", "—", "—"]
                continue
            vs = row["vs_dup_real"]
            cells += [
                f"{paper[label]:.3f}" if label in paper else "—",
                f"{row['auc']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]",
                f"{vs['delta']:+.3f} [{vs['ci95'][0]:+.3f}, {vs['ci95'][1]:+.3f}]" if vs else "—",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_markdown(comparison: dict) -> str:
    """The ratio curve as a table: per ratio and arm, each task's AUC and Δ vs real only on the
    independent set (the split's own when a run has none)."""
    labels = [k for k in comparison if k not in ("paper", "runs")]
    header = "| ratio | arm | " + " | ".join(
        f"{label} AUC | {label} Δ vs real [95% CI], p" for label in labels
    )
    lines = [header + " |", "|" + " --- |" * (2 + 2 * len(labels))]
    keys = sorted(
        {(row["ratio"], row["arm"]) for label in labels for row in comparison[label]["ratio_curve"]}
    )
    for ratio, arm in keys:
        cells = [f"{ratio:g}", arm]
        for label in labels:
            task = comparison[label]
            prefix = "external_" if task["test_set"] == "independent" else ""
            row = next(
                (r for r in task["ratio_curve"] if (r["ratio"], r["arm"]) == (ratio, arm)), None
            )
            if row is None:
                cells += ["not finished", "—"]
                continue
            cells += [
                f"{row[prefix + 'auc']:.3f}",
                f"{row[prefix + 'delta_auc']:+.3f} [{row[prefix + 'delta_low']:+.3f}, "
                f"{row[prefix + 'delta_high']:+.3f}], p = {row[prefix + 'delta_p']:.2g}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_figures(comparison: dict, out: Path, profile: str) -> list[Path]:
    """Each task's ratio curve drawn from its rows (a partial curve draws the finished ones)."""
    written = []
    for label in (k for k in comparison if k not in ("paper", "runs")):
        rows = comparison[label].get("ratio_curve") or []
        if rows:
            path = out / f"ratio_curve_{profile}_{label}.png"
            plot_ratio_curve(rows, path, label)
            written.append(path)
    return written


def is_ratio_row(name: str) -> bool:
    return name.startswith("ratio_")


def merge_curves(comparison: dict, gain: dict, tasks: list[tuple[str, dict]], run: str) -> None:
    """Replace each task's ratio curve (in place) by the run's, keeping every arm row; what is
    still missing is the arms the files already lacked plus the run's unfinished ratio rows."""
    for label, results in tasks:
        if label not in comparison:
            raise SystemExit(f"{label}: not in the existing comparison (run without --curve-only)")
        task = comparison[label]
        curve_missing = [name for name in results.get("missing", []) if is_ratio_row(name)]
        task["ratio_curve"] = results.get("ratio_curve", [])
        task["ratio_curve_source"] = {
            "run": run,
            "written": date.today().isoformat(),  # a rerun may reuse the arms' run folder name
            "partial": bool(curve_missing),
        }
        for entry in (task, gain.get(label, {})):
            arms_missing = [name for name in entry.get("missing", []) if not is_ratio_row(name)]
            entry.pop("partial", None)
            entry.pop("missing", None)
            if arms_missing or curve_missing:
                entry.update(partial=True, missing=arms_missing + curve_missing)
    if run not in comparison["runs"]:
        comparison["runs"].append(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="a finished `tiger run` folder")
    parser.add_argument("--profile", required=True, help="names the output files")
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument(
        "--finished-runs",
        action="store_true",
        help="score a stage still running from its finished trainings (marked partial)",
    )
    parser.add_argument(
        "--curve-only",
        action="store_true",
        help="replace only the ratio curves in the existing files (the arms stay as they are)",
    )
    args = parser.parse_args()

    run = Path(args.run)
    comparison: dict = {"runs": [str(run)], "paper": {a: p for a, p in PAPER.items()}}
    gain: dict = {}
    if args.finished_runs:
        labels = sorted(
            p.name.split(".")[0] for p in (run / "classifier").glob("*.experiment.json")
        )
        tasks = [(label, finished_results(run / "classifier", label)) for label in labels]
    else:
        files = sorted((run / "classifier").glob("*/results.json"))
        tasks = [(file.parent.name, json.loads(file.read_text())) for file in files]
    out = Path(args.results)
    if args.curve_only:
        comparison = json.loads((out / f"comparison_{args.profile}.json").read_text())
        gain = json.loads((out / f"phantom_gain_{args.profile}.json").read_text())
        merge_curves(comparison, gain, tasks, str(run))
        tasks = []
    for label, results in tasks:
        summary = task_summary(results)
        summary["ratio_curve"] = results.get("ratio_curve", [])
        if results.get("partial"):
            summary.update(partial=True, missing=results["missing"])
        comparison[label] = summary
        gain[label] = gain_entry(summary)
        if results.get("partial"):
            gain[label].update(partial=True, missing=results["missing"])
    if not gain:
        raise SystemExit(f"{run}: no classifier/*/results.json")
    write_json(out / f"phantom_gain_{args.profile}.json", gain)
    write_json(out / f"comparison_{args.profile}.json", comparison)
    print(markdown(comparison))
    ratio_figures(comparison, out, args.profile)
    if any(comparison[label].get("ratio_curve") for label in gain):
        print()
        print(ratio_markdown(comparison))
    for label, entry in gain.items():
        print(f"{label}: filtered vs duplicated real {entry['delta_filtered_vs_dup_real']}")


if __name__ == "__main__":
    main()
