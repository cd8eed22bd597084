"""Attribute fidelity of a finished run's generator: does each image show the attributes asked?

For each label and mode, `--images` new images from the run's fine model with the run's own
generation options (the profile's steps, resolution, seed; `--guidance-scale`,
`--conditioning-scale FG BG` and `--attribute-contrast` vary one lever), through the same CLI
the pipeline calls, then the pipeline's `evaluate` check: a probe per attribute trained on the
run's real train frames reads the attribute off each generated image;
agreement with the prompt (bootstrap 95% CI), the shuffled-prompt control (what a generator
that ignores the words scores) and the probe's accuracy on real held-out frames (the ceiling).

Writes `{"profile", "<mode>": {"<LABEL>": {"<attribute>": {agreement, ci95, shuffled,
probe_real, n}}}}` (issue 18's shape) plus, per mode and label, how many of the six attributes
clear their shuffled control and reach 0.8 x the probe's real accuracy.

    python -m benchmarks.attribute_fidelity --run runs/quick --images 64 \\
        --out benchmarks/results/attribute_fidelity_quick.json
    python -m benchmarks.attribute_fidelity --run runs/quick --from-run --out ...   # its 32 + 32
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from metadata.atomic import write_json
from scripts.pipeline.stages import flags


def generate(run: Path, mode: str, label: str, out: Path, images: int, extra: list[str]) -> None:
    """The pipeline's own generation command for this run, into `out` with `images` images."""
    config = json.loads((run / "pipeline_config.json").read_text())
    generation = config["generation"]
    command = [sys.executable, "-m", "generation.inference.cli", mode, "--model", str(run / "fine")]
    command += ["--dataset", str(run / "data" / "dataset")]
    command += ["--splits", str(run / "data" / "classifier" / "splits.json")]
    command += ["--label", label, "--out", str(out), "--num-images", str(images)]
    command += ["--seed", str(generation["seed"]), *flags(generation["options"]), *extra]
    if config.get("cpu_threads"):
        command += ["--cpu-threads", str(config["cpu_threads"])]
    subprocess.run(command, check=True)


def evaluate(run: Path, gen: Path) -> dict:
    from generation.inference.evaluate import evaluate_generation

    dataset, splits = run / "data" / "dataset", run / "data" / "classifier" / "splits.json"
    return evaluate_generation(gen, dataset, str(splits), gen / "evaluation.json")


def shaped(agreement: dict) -> dict:
    return {
        name: {
            "agreement": round(row["agreement"], 4),
            "ci95": [round(v, 4) for v in row["ci95"]],
            "shuffled": round(row["shuffled_prompt_control"], 4),
            "probe_real": row["probe_held_out_accuracy"],
            "n": row["n"],
        }
        for name, row in sorted(agreement.items())
    }


def verdict(rows: dict) -> dict:
    """The issue's two bars per attribute: CI above shuffled; agreement >= 0.8 x probe_real."""
    above = [n for n, r in rows.items() if r["ci95"][0] > r["shuffled"]]
    near = [
        n for n, r in rows.items() if r["probe_real"] and r["agreement"] >= 0.8 * r["probe_real"]
    ]
    return {"above_shuffled": above, "at_0.8_of_probe": near, "n_attributes": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="a finished `tiger run` folder")
    parser.add_argument("--profile", default=None, help="default: the run's profile")
    parser.add_argument("--labels", nargs="+", default=["FTC", "MTC"])
    parser.add_argument("--modes", nargs="+", default=["diversify", "reference"])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: engine's")
    parser.add_argument(
        "--conditioning-scale",
        type=float,
        nargs=2,
        default=None,
        metavar=("FG", "BG"),
        help="the FG and BG branches' weights (default: the engine's 1 1)",
    )
    parser.add_argument(
        "--attribute-contrast",
        action="store_true",
        help="guide against each prompt with its findings flipped (generation.inference.contrast)",
    )
    parser.add_argument(
        "--from-run",
        action="store_true",
        help="score nothing new: read the run's own generate/<LABEL>/<mode>/evaluation.json",
    )
    parser.add_argument("--work", default="runs/attribute_fidelity")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    run = Path(args.run)
    profile = args.profile or json.loads((run / "pipeline_config.json").read_text())["profile"]
    extra, tags = [], []
    if args.guidance_scale is not None:
        extra += ["--guidance-scale", str(args.guidance_scale)]
        tags.append(f"g{args.guidance_scale:g}")
    if args.conditioning_scale is not None:
        extra += ["--conditioning-scale", *map(str, args.conditioning_scale)]
        tags.append("c{:g}-{:g}".format(*args.conditioning_scale))
    if args.attribute_contrast:
        extra.append("--attribute-contrast")
        tags.append("contrast")
    tag = "_".join(tags) or "default"
    images = "the run's own" if args.from_run else args.images
    report: dict = {"profile": profile, "run": str(run), "images": images, "summary": {}}
    report["guidance_scale"] = args.guidance_scale or "engine default"
    report["conditioning_scale"] = args.conditioning_scale or "engine default"
    report["attribute_contrast"] = args.attribute_contrast
    for mode in args.modes:
        report[mode] = {}
        for label in args.labels:
            started = time.perf_counter()
            if args.from_run:  # the images the pipeline made (its generated class = the label)
                gen = run / "generate" / label / mode
                scores = json.loads((gen / "evaluation.json").read_text())
            else:
                gen = Path(args.work) / f"{run.name}_{tag}" / label / mode
                generate(run, mode, label, gen, args.images, extra)
                scores = evaluate(run, gen)
            rows = shaped(scores["agreement"])
            report[mode][label] = rows
            report["summary"][f"{mode}/{label}"] = {
                **verdict(rows),
                "mask_shape_agreement": scores.get("mask_shape_agreement"),
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(json.dumps({f"{mode}/{label}": report["summary"][f"{mode}/{label}"]}), flush=True)
            write_json(Path(args.out), report)  # after every set: a long run keeps what it made
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
