"""Which attribute words steer the generator? Counterfactual versions of the same jobs.

The shuffled-prompt control of `attribute_fidelity` cannot see a word the subtype always asks
with one value (every phantom MTC prompt says hypoechoic: shuffling changes nothing, so the
control equals the agreement by construction). Here each of the run's diversify jobs is made
once per value the probe can read (`--fix ATTRIBUTE=VALUE`). The plan draws every word from one
stream, so the versions of a job share their seed, other words and background draw; only the
word and what follows from it by design (the mask bank's outline for shape and margins, the
findings-matched background for calcifications) differ. The probe reads the attribute off each
version. A generator that ignores the word scores exactly one hit per job (balanced agreement
1/k for k values); one that follows it scores k (`generation.inference.agreement.word_control`).
Each set's mean inside brightness and shadow (`agreement.inside_summary`, the probe's own
features) is reported beside the label's real frames', per calcification value.

    python -m benchmarks.attribute_control --run runs/quick --images 16 \\
        --out benchmarks/results/attribute_control_quick.json
    python -m benchmarks.attribute_control --run runs/quick --labels MTC --attributes \\
        echogenicity --also-fix calcifications=none --out ...   # MTC without its calcifications
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from benchmarks.attribute_fidelity import generate
from generation.inference.agreement import inside_summary, word_control
from generation.inference.attributes import record_value
from generation.inference.evaluate import (
    fit_probe,
    generated_features,
    read_rows,
    real_splits,
    record_features,
)
from metadata.atomic import write_json


def probe_reads(probe, gen: Path, attribute: str, size: int) -> tuple[dict[str, str], dict]:
    """Job id -> the value the probe reads off that job's image; and the set's inside summary."""
    rows = read_rows(gen)
    features = generated_features(gen, rows, size)
    read = probe.predict(attribute, features)
    by_job = {row["id"]: str(value) for row, value in zip(rows, read, strict=True)}
    return by_job, inside_summary(features)


def real_inside(meta_file: Path, records: list, label: str, size: int) -> dict:
    """The label's real frames' inside summary, per calcification value (they change what the
    inside of a nodule looks like)."""
    groups: dict[str, list] = {}
    for record in records:
        if record.label == label:
            groups.setdefault(str(record_value(record, "calcifications")), []).append(record)
    return {
        value: {"frames": len(group)} | inside_summary(record_features(meta_file, group, size))
        for value, group in sorted(groups.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="a finished `tiger run` folder")
    parser.add_argument("--labels", nargs="+", default=["FTC", "MTC"])
    parser.add_argument("--attributes", nargs="+", default=None, help="default: every probed one")
    parser.add_argument("--images", type=int, default=16, help="jobs per attribute and label")
    parser.add_argument(
        "--also-fix",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="words every version keeps, e.g. calcifications=none (to separate two attributes)",
    )
    parser.add_argument("--work", default="runs/attribute_control")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    run = Path(args.run)
    config = json.loads((run / "pipeline_config.json").read_text())
    size = int(config["generation"]["options"].get("resolution") or 128)
    dataset, splits = run / "data" / "dataset", str(run / "data" / "classifier" / "splits.json")
    meta_file, train, held = real_splits(dataset, splits, size=size)
    probe = fit_probe(meta_file, train, held, size)
    attributes = args.attributes or sorted(probe.models)
    report: dict = {"run": str(run), "images": args.images, "resolution": size, "labels": {}}
    report["also_fixed"] = args.also_fix
    work = Path(args.work) / run.name / "_".join(args.also_fix).replace("=", "-")
    for label in args.labels:
        rows: dict = {}
        for attribute in attributes:
            values = [str(v) for v in probe.models[attribute].classes_]
            read: dict[str, dict[str, str]] = {}
            reads_by_value, inside_by_value, seconds = {}, {}, 0.0
            for value in values:
                gen = work / label / attribute / value
                started = time.perf_counter()
                extra = ["--fix", f"{attribute}={value}", *args.also_fix]
                generate(run, "diversify", label, gen, args.images, extra)
                seconds += time.perf_counter() - started
                by_job, inside_by_value[value] = probe_reads(probe, gen, attribute, size)
                for job, got in by_job.items():
                    read.setdefault(job, {})[value] = got
                counts = Counter(by_job.values())
                reads_by_value[value] = {v: round(c / len(by_job), 3) for v, c in counts.items()}
            rows[attribute] = word_control(read) | {
                "values": values,
                "probe_reads_when_asked": reads_by_value,
                "inside_when_asked": inside_by_value,
                "probe_real": probe.held_out_accuracy.get(attribute, {}).get("accuracy"),
                "seconds": round(seconds, 1),
            }
            print(json.dumps({label: attribute, **rows[attribute]}), flush=True)
        steered = [a for a, r in rows.items() if r["ci95"][0] > r["chance"]]
        report["labels"][label] = {
            "attributes": rows,
            "steered_above_chance": steered,
            "real_frames_inside": real_inside(meta_file, train + held, label, size),
        }
        write_json(Path(args.out), report)  # after each label: a long run keeps what it made
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
