"""Training levers for attribute fidelity, paired across finished runs.

Issue 18's training levers (word dropout in the coarse stage, ...) change the generator, so each
lever is a whole `tiger run` with one option changed (`--set coarse.word_dropout=0.3`). Runs with
the same data, split and generation seed plan the same jobs (prompt, FG mask, background map and
noise seed per job id), so every image of a lever run has a twin in the baseline run, and a
lever's effect on an attribute is a paired difference: per job, does the probe read the asked
value in the lever's image and in the baseline's. One probe per label (fit on the baseline's real
train frames; the runs must share their splits) scores both runs' own generated images (32 per
label and mode in the quick profile). Reported per mode, label and attribute: each run's
agreement [bootstrap 95% CI], its shuffled-prompt control, how often the probe reads each value,
and the paired delta [bootstrap 95% CI over jobs] with an exact sign test; plus each run's count
of attributes whose CI clears its shuffled control (issue 18's bar).

    tiger run --run-dir runs/quick
    tiger run --run-dir runs/words --set coarse.word_dropout=0.3
    python -m benchmarks.training_levers --baseline runs/quick --lever words=runs/words \\
        --out benchmarks/results/training_levers_quick.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.guidance_levers import attribute_entry, hits_per_image, paired_delta
from generation.inference.agreement import agreement
from generation.inference.evaluate import fit_probe, generated_features, read_rows, real_splits
from metadata.atomic import write_json


def run_options(run: Path) -> dict:
    return json.loads((run / "pipeline_config.json").read_text())


def check_same_plan(baseline: Path, lever: Path) -> None:
    """Paired only if both runs split the same cases and planned the same jobs."""

    def cases(run: Path) -> dict:
        splits = json.loads((run / "data" / "classifier" / "splits.json").read_text())
        return {k: v for k, v in splits.items() if k != "source"}  # "source": the run's own path

    if cases(baseline) != cases(lever):
        raise SystemExit(f"{lever}: its splits.json differs from {baseline}'s; not paired")
    for key in ("data", "split"):
        if run_options(baseline)[key] != run_options(lever)[key]:
            raise SystemExit(f"{lever}: pipeline config {key!r} differs from {baseline}'s")
    if run_options(baseline)["generation"]["seed"] != run_options(lever)["generation"]["seed"]:
        raise SystemExit(f"{lever}: another generation seed than {baseline}; not paired")


def changed_options(baseline: Path, lever: Path) -> dict:
    """The stage options where the lever run's config differs (what the lever is)."""
    base, other = run_options(baseline), run_options(lever)
    changed = {}
    for section in ("coarse", "fine", "generation", "clip", "moso", "filter"):
        keys = set(base.get(section) or {}) | set(other.get(section) or {})
        for key in sorted(keys):
            old, new = (base.get(section) or {}).get(key), (other.get(section) or {}).get(key)
            if old != new:
                changed[f"{section}.{key}"] = {"baseline": old, "lever": new}
    return changed


def compare(baseline: Path, levers: dict[str, Path], labels: list[str], modes: list[str]) -> dict:
    dataset = baseline / "data" / "dataset"
    splits = str(baseline / "data" / "classifier" / "splits.json")
    report: dict = {"baseline": str(baseline), "levers": {}, "modes": {}}
    for name, run in levers.items():
        check_same_plan(baseline, run)
        report["levers"][name] = {"run": str(run), "changed": changed_options(baseline, run)}
    probes: dict = {}
    for mode in modes:
        report["modes"][mode] = {}
        for label in labels:
            runs = {"baseline": baseline, **levers}
            rows = {n: read_rows(r / "generate" / label / mode) for n, r in runs.items()}
            asked = {r["id"]: r["attributes"] for r in rows["baseline"]}
            for n in levers:
                if any(asked.get(r["id"], r["attributes"]) != r["attributes"] for r in rows[n]):
                    raise SystemExit(f"{runs[n]}: {label} {mode} jobs ask other attributes")
            size = int(rows["baseline"][0].get("resolution") or 128)
            if size not in probes:  # one probe scores every run's images
                meta_file, train, held = real_splits(dataset, splits, size=size)
                probes[size] = fit_probe(meta_file, train, held, size)
            probe = probes[size]
            sets = {
                n: generated_features(r / "generate" / label / mode, rows[n], size)
                for n, r in runs.items()
            }
            out: dict = {}
            base_hits = {
                a: hits_per_image(probe, sets["baseline"], rows["baseline"], a)
                for a in probe.models
            }
            for n in runs:
                prompted = {a: [r["attributes"].get(a) for r in rows[n]] for a in probe.models}
                scores = agreement(probe, sets[n], prompted)
                attributes = {}
                for attribute in sorted(scores):
                    attributes[attribute] = attribute_entry(probe, sets[n], attribute, scores)
                    if n != "baseline":
                        hits = hits_per_image(probe, sets[n], rows[n], attribute)
                        attributes[attribute]["paired_vs_baseline"] = paired_delta(
                            hits, base_hits[attribute]
                        )
                above = [a for a, e in attributes.items() if e["ci95"][0] > e["shuffled"]]
                out[n] = {"attributes": attributes, "above_shuffled": above, "images": len(rows[n])}
                summary = {a: e["agreement"] for a, e in attributes.items()}
                print(json.dumps({mode: label, "run": n, "agreement": summary}), flush=True)
            report["modes"][mode][label] = out
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", required=True, help="a finished `tiger run` folder")
    parser.add_argument(
        "--lever", nargs="+", required=True, metavar="NAME=RUN", help="lever runs, paired"
    )
    parser.add_argument("--labels", nargs="+", default=["FTC", "MTC"])
    parser.add_argument("--modes", nargs="+", default=["diversify", "reference"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    levers = {}
    for item in args.lever:
        name, _, folder = item.partition("=")
        if not folder:
            raise SystemExit(f"--lever {item!r}: expected NAME=RUN_FOLDER")
        levers[name] = Path(folder)
    report = compare(Path(args.baseline), levers, args.labels, args.modes)
    write_json(Path(args.out), report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
