"""The report's checks as numbers with 95% CIs, read from a finished run folder.

Two runs (say, two profiles) are only comparable check by check: a faster profile is acceptable
when its report says the same things, so each check is kept with its interval and `compare`
says whether each run's value lies inside the other's CI.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

GENERATED_MODES = ("diversify", "reference", "coarse_only")


@dataclass(frozen=True)
class Check:
    """One number of the report with its 95% CI (`low` = `high` = `value` when it has none)."""

    value: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def generation_checks(label: str, mode: str, folder: Path) -> dict[str, Check]:
    """FG IoU, background r and attribute agreement of one generated folder."""
    checks: dict[str, Check] = {}
    control = read_json(folder / "control.json")
    if control:
        fg = control["fg_iou"]
        checks[f"{label}/{mode}/fg_iou"] = Check(fg["mean"], *fg["ci95"])
        bg = control.get("bg") or {}
        if bg.get("pearson_r") is not None:
            checks[f"{label}/{mode}/bg_r"] = Check(bg["pearson_r"], *bg["pearson_ci95"])
    evaluation = read_json(folder / "evaluation.json")
    for attribute, row in sorted(((evaluation or {}).get("agreement") or {}).items()):
        checks[f"{label}/{mode}/agreement/{attribute}"] = Check(row["agreement"], *row["ci95"])
    return checks


def classifier_checks(label: str, results: dict) -> dict[str, Check]:
    """Every arm's test AUC: on the independent test set when the run has one, else the split's."""
    if "external" in results:
        test_set, arms = "independent", results["external"]
    else:
        test_set, arms = "split", results["arms"]
    return {
        f"{label}/auc_{test_set}/{arm}": Check(row["auc"], row["auc_low"], row["auc_high"])
        for arm, row in sorted(arms.items())
    }


def run_checks(run_dir: str | Path) -> dict[str, Check]:
    """Every check a finished run's report shows with a CI, by a stable name."""
    root = Path(run_dir)
    checks: dict[str, Check] = {}
    for label_dir in sorted(p for p in (root / "generate").glob("*") if p.is_dir()):
        for mode in GENERATED_MODES:
            if (label_dir / mode).is_dir():
                checks.update(generation_checks(label_dir.name, mode, label_dir / mode))
    for results_file in sorted((root / "classifier").glob("*/results.json")):
        checks.update(
            classifier_checks(results_file.parent.name, json.loads(results_file.read_text()))
        )
    return checks


def compare(baseline: dict[str, Check], candidate: dict[str, Check]) -> dict:
    """Check by check: is each run's value inside the other's 95% CI? Only shared checks count."""
    rows = {}
    for name in sorted(set(baseline) & set(candidate)):
        old, new = baseline[name], candidate[name]
        rows[name] = {
            "baseline": asdict(old),
            "candidate": asdict(new),
            "difference": new.value - old.value,
            "candidate_inside_baseline_ci": old.contains(new.value),
            "baseline_inside_candidate_ci": new.contains(old.value),
        }
    outside = sorted(
        name
        for name, row in rows.items()
        if not (row["candidate_inside_baseline_ci"] or row["baseline_inside_candidate_ci"])
    )
    return {
        "checks": rows,
        "shared": len(rows),
        "only_in_baseline": sorted(set(baseline) - set(candidate)),
        "only_in_candidate": sorted(set(candidate) - set(baseline)),
        "candidate_inside_baseline_ci": sum(
            r["candidate_inside_baseline_ci"] for r in rows.values()
        ),
        "neither_inside_the_other": outside,
    }
