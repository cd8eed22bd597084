"""A cheaper default run against the current one: both timed in one benchmark run, checks compared.

Issue 23 asks for a default `tiger run` of at most 15 minutes on the 2-core machine whose report
says the same things as today's. A cut is only acceptable if its checks hold, so this runs
`tiger run` for the baseline profile and for the candidate (a profile plus `--candidate-set`
overrides), one after the other into fresh run folders (nothing else should run meanwhile), and
compares every check of the two reports that has a 95% CI (FG IoU, background r and attribute
agreement per subtype and mode; every arm's AUC on the independent test set): is each run's value
inside the other's interval (`scripts.pipeline.checks.compare`)? Writes

    {"baseline": ..., "candidate": ..., "profiles": {name: {wall_seconds, stage_seconds, run_dir}},
     "ratio": baseline / candidate wall time, "target_seconds": 900,
     "candidate_within_target": bool, "checks": {...}}

    python -m benchmarks.default_run_time --candidate-set coarse.max_train_steps=900
    # only the checks of two finished run folders (no timing: they may not share a machine state)
    python -m benchmarks.default_run_time --compare-runs runs/quick2 runs/fast1 --out X.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.anchors import environment_note, write_result
from scripts.pipeline.checks import compare, run_checks

TARGET_SECONDS = 15 * 60


def run_pipeline(profile: str, overrides: list[str], run_dir: Path, log: Path) -> float:
    """Wall seconds of one fresh `tiger run` (its output goes to `log`)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    command = [sys.executable, "-m", "scripts.cli", "run", "--profile", profile]
    command += ["--run-dir", str(run_dir)]
    if overrides:
        command += ["--set", *overrides]
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}); see {log}")
    return seconds


def stage_seconds(run_dir: Path) -> dict[str, float]:
    """Seconds of each stage that ran in this run (skipped stages are left out)."""
    timings = json.loads((run_dir / "timings.json").read_text())
    return {s["stage"]: s["seconds"] for s in timings["stages"] if not s["skipped"]}


def checks_between(baseline: Path, candidate: Path) -> dict:
    result = compare(run_checks(baseline), run_checks(candidate))
    if not result["shared"]:
        raise SystemExit(f"{baseline} and {candidate} share no check: are both runs finished?")
    return result


def summary_line(checks: dict) -> str:
    return (
        f"{checks['candidate_inside_baseline_ci']}/{checks['shared']} checks inside the "
        f"baseline's CI; outside both CIs: {checks['neither_inside_the_other']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="quick", help="the current default profile")
    parser.add_argument("--candidate", default="quick", help="the candidate's profile")
    parser.add_argument("--candidate-set", nargs="*", default=[], help="KEY=VALUE overrides")
    parser.add_argument("--root", default="runs/default_run_time", help="run folders go here")
    parser.add_argument("--compare-runs", nargs=2, metavar=("BASELINE", "CANDIDATE"))
    parser.add_argument("--out", default="benchmarks/results/default_run_time.json")
    args = parser.parse_args()

    if args.compare_runs:
        baseline, candidate = (Path(p) for p in args.compare_runs)
        checks = checks_between(baseline, candidate)
        result = {
            "baseline_run": str(baseline),
            "candidate_run": str(candidate),
            "stage_seconds": {
                "baseline": stage_seconds(baseline),
                "candidate": stage_seconds(candidate),
            },
            "checks": checks,
        }
        write_result(Path(args.out), result)
        print(summary_line(checks))
        return

    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    # The candidate first: a machine that slows during the benchmark slows the baseline, so the
    # ratio errs against the candidate, not for it.
    plan = {"candidate": (args.candidate, args.candidate_set), "baseline": (args.baseline, [])}
    profiles: dict[str, dict] = {}
    for role, (profile, overrides) in plan.items():
        run_dir = root / role
        wall = run_pipeline(profile, overrides, run_dir, root / f"{role}.log")
        profiles[role] = {
            "profile": profile,
            "overrides": overrides,
            "wall_seconds": round(wall, 1),
            "stage_seconds": stage_seconds(run_dir),
            "run_dir": str(run_dir),
        }
        print(f"{role} ({profile} {' '.join(overrides)}): {wall / 60:.1f} min", flush=True)

    checks = checks_between(root / "baseline", root / "candidate")
    candidate_wall = profiles["candidate"]["wall_seconds"]
    result = {
        "profiles": profiles,
        "ratio": round(profiles["baseline"]["wall_seconds"] / candidate_wall, 3),
        "target_seconds": TARGET_SECONDS,
        "candidate_within_target": candidate_wall <= TARGET_SECONDS,
        "checks": checks,
        "cpus": os.cpu_count(),
        "environment": environment_note(),
    }
    write_result(Path(args.out), result)
    print(f"ratio {result['ratio']}; {summary_line(checks)}")


if __name__ == "__main__":
    main()
