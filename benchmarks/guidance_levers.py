"""Sampling levers for attribute fidelity, paired: the same jobs generated with each lever.

Issue 18 asks for guidance chosen by measured agreement. For a finished run, every lever makes
the same diversify jobs (prompts, FG masks, background maps, seeds: the plan depends on the
run's seed only; the findings levers change the background and the mask's place by design) as
the baseline (the run's own generation options with any-frame backgrounds, the default before
`--background-match findings`), so each image has a twin and a lever's effect on an attribute
is a paired difference: per image, does the probe read the asked value with the lever and
without it. Reported per label and attribute: agreement of each set [bootstrap 95% CI], its
shuffled-prompt control, how often the probe reads each value (a generator that never draws a
calcification shows it here), and the paired delta against the baseline [bootstrap 95% CI over
images] with an exact two-sided sign test on the discordant pairs (`--reference` names another
lever to pair against, e.g. `findings_background`, today's default). One probe per label (fit on
the run's real train frames) scores every set.

    python -m benchmarks.guidance_levers --run runs/quick --images 32 \\
        --out benchmarks/results/guidance_levers_quick.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from benchmarks.attribute_fidelity import generate
from generation.inference.agreement import agreement, bootstrap_interval
from generation.inference.attributes import record_value
from generation.inference.evaluate import (
    fit_probe,
    generated_features,
    read_rows,
    real_splits,
    record_features,
)
from metadata.atomic import write_json

# The backgrounds before the findings match was default; both BG branches everywhere, as before
# --background-outside-nodule (on by default in diversify mode since) was measured.
ANY = ["--background-match", "any", "--background-outside-nodule", "false"]
FINDINGS = ["--background-match", "findings", "--background-outside-nodule", "false"]
OUTSIDE = ["--background-match", "findings", "--background-outside-nodule", "true"]
LEVERS: dict[str, list[str]] = {
    "baseline": ANY,
    "contrast": [*ANY, "--attribute-contrast"],
    "guidance_8": [*ANY, "--guidance-scale", "8"],
    "contrast_guidance_8": [*ANY, "--attribute-contrast", "--guidance-scale", "8"],
    "fg_branch_0.5": [*ANY, "--conditioning-scale", "0.5", "1.0"],
    "findings_background": FINDINGS,
    "findings_background_contrast": [*FINDINGS, "--attribute-contrast"],
    "bg_outside_nodule": OUTSIDE,
    "bg_outside_nodule_fg_2": [*OUTSIDE, "--conditioning-scale", "2", "1"],
    "findings_background_fg_2": [*FINDINGS, "--conditioning-scale", "2", "1"],
    "findings_background_bg_off": [*FINDINGS, "--conditioning-scale", "1", "0"],
    "findings_background_fg_off": [*FINDINGS, "--conditioning-scale", "0", "1"],
}


def hits_per_image(probe, features: np.ndarray, rows: list[dict], name: str) -> dict[str, bool]:
    """Job id -> whether the probe reads the asked value (images whose prompt states it)."""
    model = probe.models[name]
    keep = [i for i, r in enumerate(rows) if r["attributes"].get(name) in model.classes_]
    if not keep:
        return {}
    read = probe.predict(name, features[keep])
    return {rows[i]["id"]: bool(read[k] == rows[i]["attributes"][name]) for k, i in enumerate(keep)}


def paired_delta(lever: dict[str, bool], base: dict[str, bool], seed: int = 0) -> dict:
    ids = sorted(set(lever) & set(base))
    diff = np.array([float(lever[i]) - float(base[i]) for i in ids])
    gained, lost = int((diff > 0).sum()), int((diff < 0).sum())
    p = binomtest(gained, gained + lost).pvalue if gained + lost else 1.0
    return {
        "delta": float(diff.mean()) if ids else float("nan"),
        "ci95": bootstrap_interval(diff, np.random.default_rng(seed)),
        "gained": gained,
        "lost": lost,
        "p_sign": float(p),
        "n_pairs": len(ids),
    }


def attribute_entry(probe, features: np.ndarray, attribute: str, scores: dict) -> dict:
    """One set's row for one attribute: agreement [CI], shuffled control, the probe's real
    held-out accuracy and what the probe reads."""
    row = scores[attribute]
    return {
        "agreement": round(row["agreement"], 4),
        "ci95": [round(v, 4) for v in row["ci95"]],
        "shuffled": round(row["shuffled_prompt_control"], 4),
        "probe_real": row["probe_held_out_accuracy"],
        "reads": reads(probe, features, attribute),
    }


def probe_on_label(probe, meta_file: Path, held: list, label: str, size: int) -> dict:
    """The probe's accuracy on the real held-out frames of `label` only: the ceiling for that
    label's images (the overall `probe_real` is mostly benign frames)."""
    records = [r for r in held if r.label == label]
    if not records:
        return {}
    features = record_features(meta_file, records, size)
    accuracy = {}
    for name, model in probe.models.items():
        asked = [record_value(r, name) for r in records]
        keep = [i for i, value in enumerate(asked) if value in model.classes_]
        if keep:
            read = probe.predict(name, features[keep])
            accuracy[name] = round(float(np.mean(read == np.asarray(asked)[keep])), 4)
    return {"frames": len(records), "accuracy": accuracy}


def reads(probe, features: np.ndarray, name: str) -> dict[str, float]:
    counts = Counter(probe.predict(name, features).tolist())
    return {value: round(count / len(features), 3) for value, count in sorted(counts.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="a finished `tiger run` folder")
    parser.add_argument("--labels", nargs="+", default=["FTC", "MTC"])
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument(
        "--reference",
        default="baseline",
        choices=list(LEVERS),
        help="the lever every other is paired against (default: baseline)",
    )
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--work", default="runs/guidance_levers")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    run = Path(args.run)
    reference = args.reference
    levers = [reference, *[name for name in args.levers if name != reference]]
    dataset, splits = run / "data" / "dataset", str(run / "data" / "classifier" / "splits.json")
    report: dict = {"run": str(run), "images": args.images, "reference": reference}
    report |= {"levers": {}, "labels": {}}
    for name in levers:
        report["levers"][name] = ["the run's own generation options", *LEVERS[name]]
    for label in args.labels:
        sets = {}
        for name in levers:
            gen = Path(args.work) / run.name / label / name
            started = time.perf_counter()
            generate(run, "diversify", label, gen, args.images, LEVERS[name])
            sets[name] = {"gen": gen, "seconds": round(time.perf_counter() - started, 1)}
        rows = {name: read_rows(s["gen"]) for name, s in sets.items()}
        size = int(rows[reference][0].get("resolution") or 128)
        meta_file, train, held = real_splits(dataset, splits, size=size)
        probe = fit_probe(meta_file, train, held, size)
        features = {name: generated_features(sets[name]["gen"], rows[name], size) for name in sets}
        base_hits = {
            attr: hits_per_image(probe, features[reference], rows[reference], attr)
            for attr in probe.models
        }
        out: dict = {}
        for name in levers:
            prompted = {a: [r["attributes"].get(a) for r in rows[name]] for a in probe.models}
            scores = agreement(probe, features[name], prompted)
            out[name] = {"seconds": sets[name]["seconds"], "attributes": {}}
            for attr in sorted(scores):
                entry = attribute_entry(probe, features[name], attr, scores)
                if name != reference:
                    lever_hits = hits_per_image(probe, features[name], rows[name], attr)
                    entry[f"paired_vs_{reference}"] = paired_delta(lever_hits, base_hits[attr])
                out[name]["attributes"][attr] = entry
            above = [a for a, e in out[name]["attributes"].items() if e["ci95"][0] > e["shuffled"]]
            out[name]["above_shuffled"] = above
            summary = {a: e["agreement"] for a, e in out[name]["attributes"].items()}
            print(json.dumps({label: name, "agreement": summary, "above": above}), flush=True)
        out["probe_on_real_frames_of_label"] = probe_on_label(probe, meta_file, held, label, size)
        report["labels"][label] = out
        write_json(Path(args.out), report)  # after each label: a long run keeps what it made
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
