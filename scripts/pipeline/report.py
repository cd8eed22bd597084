"""The run's report (RUN/report/report.md + report.html + figures/): what a clinician-researcher
needs to judge the run — data, synthetic samples, control and filtering measurements, the
classifier arms with CIs, memorization, cost, and the exact config and versions.

`python -m scripts.pipeline.report RUN` (or `tiger report RUN`) rebuilds it from a run folder.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from collections import Counter
from importlib import metadata as importlib_metadata
from pathlib import Path

from classifier.experiment_text import ARM_TITLES
from metadata.atomic import write_text
from scripts.pipeline.document import Document
from scripts.pipeline.figures import sample_grid, score_histograms
from scripts.pipeline.stages import Layout, augment_labels, negative_label

ARM_NAMES = ARM_TITLES
MODES = ("diversify", "reference")
PACKAGES = (
    "tiger-ultrasound",
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "accelerate",
    "peft",
    "open-clip-torch",
    "scikit-learn",
    "numpy",
)


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def interval(low: object, high: object, digits: int = 3) -> str:
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def versions() -> list[list[str]]:
    rows = [["python", platform.python_version()], ["platform", platform.platform()]]
    for package in PACKAGES:
        try:
            rows.append([package, importlib_metadata.version(package)])
        except importlib_metadata.PackageNotFoundError:
            continue
    try:
        commit = git("rev-parse", "--short", "HEAD")
        if commit and git("status", "--porcelain", "--untracked-files=no"):
            commit += " + uncommitted changes"
        if commit:
            rows.append(["tiger git commit", commit])
    except (OSError, subprocess.SubprocessError):
        pass
    return rows


def git(*args: str) -> str:
    """Output of a git command in this checkout ('' outside a git checkout)."""
    return subprocess.run(
        ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
    ).stdout.strip()


def bg_cell(bg: dict) -> str:
    """Requested vs generated background brightness (the BG branch's control)."""
    if not bg:
        return "-"
    ci = bg.get("pearson_ci95") or [None, None]
    return f"{fmt(bg.get('pearson_r'))} {interval(*ci)}, {fmt(bg.get('mean_abs_error'), 1)}"


def duplicates_paragraph(doc: Document, layout: Layout, figures: Path) -> None:
    """Near-duplicate frames the import merged into one case, or dropped for conflicting labels."""
    from metadata.builder import DUPLICATES_GRID, DUPLICATES_REPORT

    found = load(layout.dataset / DUPLICATES_REPORT)
    if not found:
        return
    groups, dropped = found.get("groups", []), found.get("dropped_conflicts", [])
    text = (
        f"Near-duplicates: {len(groups)} group(s) of cases share a near-identical frame "
        f"({found.get('rule', '')}); each group was merged into one case."
    )
    if dropped:
        files = "; ".join(", ".join(entry["files"]) for entry in dropped)
        text += f" {len(dropped)} group(s) with conflicting labels were left out: {files}."
    doc.paragraph(text)
    grid = layout.dataset / DUPLICATES_GRID
    if grid.is_file():
        shutil.copyfile(grid, figures / DUPLICATES_GRID)
        doc.image(f"figures/{DUPLICATES_GRID}", "Near-duplicate groups: one row per group")


def dataset_section(doc: Document, layout: Layout, figures: Path) -> None:
    from metadata.grid import save_class_grid
    from metadata.records import read_metadata

    doc.heading("Dataset")
    records = read_metadata(layout.dataset)
    labels = Counter(r.label for r in records)
    cases = len({r.case_id for r in records})
    doc.paragraph(
        f"{len(records)} images from {cases} cases in {layout.dataset}. Images per label: "
        + ", ".join(f"{k} {v}" for k, v in sorted(labels.items()))
        + ". Splits are by case; validation and test hold real images only, and the diffusion "
        "models, CLIP and MoSo were trained on the train cases only "
        f"({len(read_metadata(layout.train_only))} images)."
    )
    splits = load(layout.splits) or {}
    rows = []
    for task in splits.get("tasks", []):
        counts: Counter = Counter()
        for entry in splits["assignments"].values():
            if task in entry["tasks"]:
                counts[(entry["split"], entry["label"] == task)] += 1
        rows.append(
            [task]
            + [f"{counts[(s, False)]} / {counts[(s, True)]}" for s in ("train", "valid", "test")]
        )
    negative = negative_label(splits)
    doc.table([f"task ({negative} / positive class)", "train", "valid", "test"], rows)
    duplicates_paragraph(doc, layout, figures)
    grid = save_class_grid(layout.dataset, figures / "dataset_grid.png", per_class=6, tile=96)
    doc.image(f"figures/{grid.name}", "Real images per class (one row per class)")


def generation_section(
    doc: Document, layout: Layout, labels: dict[str, str], figures: Path
) -> None:
    doc.heading("Synthetic images: real vs generated")
    for subtype, label in labels.items():
        gen = layout.generated(subtype)
        path = sample_grid(layout, subtype, figures / f"samples_{subtype}.png", label)
        if path is not None:
            generated = "" if label == subtype else f" (generated class: {label})"
            doc.image(
                f"figures/{path.name}",
                f"{subtype}{generated}: real {label} train images (top), diversify, reference "
                "(rows below)",
            )
        rows = []
        for mode in ("diversify", "reference"):
            evaluation = load(gen / mode / "evaluation.json")
            if evaluation is None:
                continue
            control = load(gen / mode / "control.json") or {}
            iou = control.get("fg_iou") or {}
            chance = control.get("fg_iou_shuffled_masks") or {}
            ceiling = control.get("segmenter_real_held_out_iou") or {}
            rows.append(
                [
                    mode,
                    evaluation["n_images"],
                    fmt(evaluation.get("mask_shape_agreement")),
                    f"{fmt(iou.get('mean'))} {interval(*iou.get('ci95', [None, None]))}"
                    if iou
                    else "-",
                    fmt(chance.get("mean")) if chance else "-",
                    fmt(ceiling.get("mean")) if ceiling else "-",
                    bg_cell(control.get("bg") or {}),
                ]
            )
        doc.heading(f"Control measurements: {subtype}", 3)
        doc.table(
            [
                "mode",
                "images",
                "mask shape = prompt",
                "FG IoU [95% CI]",
                "FG IoU, shuffled masks",
                "segmenter ceiling (real)",
                "BG mean: r [95% CI], MAE",
            ],
            rows,
        )
        doc.paragraph(
            "FG IoU: a nodule segmenter trained on real train images segments each generated "
            "image; IoU with the mask it was conditioned on, against another image's mask "
            "(shuffled: chance) and the segmenter's IoU on real held-out images (ceiling). BG: "
            "background brightness asked for (text_bg) vs measured on the generated image."
        )
        agreement_rows = []
        for mode in ("diversify", "reference"):
            evaluation = load(gen / mode / "evaluation.json") or {}
            for name, row in sorted(evaluation.get("agreement", {}).items()):
                agreement_rows.append(
                    [
                        mode,
                        name,
                        f"{fmt(row.get('agreement'))} {interval(*row.get('ci95', [None, None]))}",
                        fmt(row.get("shuffled_prompt_control")),
                        fmt(row.get("probe_held_out_accuracy")),
                    ]
                )
        if agreement_rows:
            doc.paragraph(
                "Attribute agreement: a probe trained on real train images reads each attribute "
                "off the generated image; agreement with the prompt, against the same probe on "
                "shuffled prompts (chance) and the probe's own accuracy on real held-out images."
            )
            doc.table(
                ["mode", "attribute", "agreement [95% CI]", "shuffled control", "probe on real"],
                agreement_rows,
            )


def filtering_section(doc: Document, layout: Layout, subtypes: list[str], figures: Path) -> None:
    doc.heading("Filtering: CLIP and MoSo")
    selection = load(layout.clip / "selection.json")
    if selection:
        doc.paragraph(
            f"Domain CLIP: {selection['rule']}; kept epoch {selection['selected_epoch']}"
            f" (held-out retrieval AUC {fmt(selection.get('held_out_retrieval_auc'), 3)} on "
            f"{selection['held_out_images']} images of validation cases from the train split, "
            f"{selection['held_out_distinct_texts']} distinct descriptions)."
        )
    rows = []
    for subtype in subtypes:
        out = layout.filtered(subtype)
        summary = load(out / "filtered" / "report.json") or {}
        clip = load(out / "clip" / "clip_report.json") or {}
        matched = clip.get("synthetic_matched", {})
        mismatched = clip.get("synthetic_mismatched", {})
        reasons = Counter(r["drop_reason"] for r in summary.get("dropped", []))
        rows.append(
            [
                subtype,
                summary.get("total", "-"),
                summary.get("kept", "-"),
                ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or "none",
                fmt(matched.get("mean"), 2),
                fmt(mismatched.get("mean"), 2),
                fmt(clip.get("matched_vs_mismatched", {}).get("wilcoxon_p_greater"), 4),
            ]
        )
        manifest = read_jsonl(out / "filtered" / "manifest.jsonl")
        moso = read_jsonl(out / "moso" / "moso_scores.jsonl")
        path = score_histograms(manifest, moso, figures / f"scores_{subtype}.png", subtype)
        if path is not None:
            doc.image(f"figures/{path.name}", f"{subtype}: CLIP and MoSo scores, kept vs dropped")
    doc.table(
        [
            "subtype",
            "generated",
            "kept",
            "dropped by",
            "CLIP matched",
            "CLIP mismatched text",
            "p (matched > mismatched)",
        ],
        rows,
    )


def attribute_evidence(layout: Layout, subtype: str, label: str) -> str | None:
    """One line beside the arms: which attributes the generated images carry (agreement of the
    probe read with the prompt per mode, the shuffled-prompt control after it)."""
    gen = layout.generated(subtype)
    by_mode = {m: (load(gen / m / "evaluation.json") or {}).get("agreement", {}) for m in MODES}
    names = sorted(set().union(*(rows.keys() for rows in by_mode.values())))
    if not names:
        return None
    cells = []
    for name in names:
        values = " / ".join(fmt(by_mode[m].get(name, {}).get("agreement"), 2) for m in MODES)
        shuffled = by_mode["diversify"].get(name, {}).get("shuffled_prompt_control")
        cells.append(f"{name} {values} (shuffled {fmt(shuffled, 2)})")
    above = [
        n
        for n, row in by_mode["diversify"].items()
        if row.get("ci95") and row["ci95"][0] > row["shuffled_prompt_control"]
    ]
    return (
        f"What the generated {label} images carry (attribute agreement, diversify / reference): "
        + "; ".join(cells)
        + f". Diversify: {len(above)} of {len(by_mode['diversify'])} attributes with the CI "
        "above the shuffled control."
    )


def arm_order(arm: str) -> int:
    return list(ARM_NAMES).index(arm) if arm in ARM_NAMES else 99


def delta_cells(row: dict) -> list[str]:
    """The paired ΔAUC against real only and against duplicated real, with their CIs."""
    return [
        f"{row[f'{p}_auc']:+.3f} {interval(row[f'{p}_low'], row[f'{p}_high'])}"
        if f"{p}_auc" in row
        else "—"
        for p in ("delta", "dup_delta")
    ]


def independent_test_table(doc: Document, results: dict) -> None:
    """The arms again on the large independent test set (the phantom's, from another seed)."""
    counts = results["setup"]["external_counts"]
    doc.paragraph(
        f"The same models on the independent test set: {counts['0']} class-0 and {counts['1']} "
        f"class-1 real frames of cases no stage has seen ({results['setup']['external_croot']}), "
        f"against {results['setup']['real_counts']['test']['1']} class-1 frames in the split's "
        "own test set."
    )
    rows = []
    arms = results["external"]
    for arm in sorted(arms, key=arm_order):
        row = arms[arm]
        deltas = delta_cells(row)
        rows.append(
            [
                ARM_NAMES.get(arm, arm),
                f"{row['auc']:.3f} {interval(row['auc_low'], row['auc_high'])}",
                deltas[0],
                fmt(row.get("delta_p")),
                deltas[1],
                fmt(row.get("dup_delta_p")),
            ]
        )
    doc.table(
        [
            "arm",
            "independent test AUC [95% CI]",
            "ΔAUC vs real [95% CI]",
            "p",
            "ΔAUC vs duplicated real [95% CI]",
            "p",
        ],
        rows,
    )


def added_images(setup: dict, label: str, negative: str) -> str:
    """What the count-matched arms add: one class, or both at a matched share (other_class)."""
    extra = {c: n for c, n in setup["extra_per_class"].items() if n}
    if len(extra) < 2:
        return f"{sum(extra.values())} {label} images"
    matched = setup.get("config", {}).get("train", {}).get("synthetic_share") == "matched"
    return f"{extra.get('1', 0)} positive and {extra.get('0', 0)} {negative} images" + (
        ", generated images drawn equally often in both classes" if matched else ""
    )


def classifier_section(
    doc: Document, layout: Layout, labels: dict[str, str], figures: Path
) -> None:
    doc.heading("Classifier: real vs synthetic-augmented (test set: real images only)")
    negative = negative_label(load(layout.splits) or {})
    for subtype, label in labels.items():
        folder = layout.classifier(subtype)
        results = load(folder / "results.json")
        if results is None:
            continue
        setup = results["setup"]
        real = setup["real_counts"]
        doc.heading(f"{subtype} vs {negative}", 3)
        doc.paragraph(
            f"Real images ({negative} / {subtype}): "
            + ", ".join(f"{s} {real[s]['0']} / {real[s]['1']}" for s in ("train", "valid", "test"))
            + f". Arms 3-5 and 7-9 add {added_images(setup, label, negative)} to train/ (arm 3 "
            "duplicates real ones: the count-matched control). AUC is the seed "
            "mean with a 95% CI from a bootstrap over test cases and seeds (training variance "
            "included); Δ is paired against arm 1, and against arm 3, on the same test images."
        )
        rows = []
        arms = results["arms"]
        for arm in sorted(arms, key=arm_order):
            row = arms[arm]
            deltas = delta_cells(row)
            rows.append(
                [
                    ARM_NAMES.get(arm, arm),
                    f"{row['auc']:.3f} {interval(row['auc_low'], row['auc_high'])}",
                    deltas[0],
                    fmt(row.get("delta_p")),
                    deltas[1],
                    fmt(row.get("dup_delta_p")),
                    fmt(row.get("sensitivity"), 2),
                    fmt(row.get("specificity"), 2),
                    row.get("n_seeds", "-"),
                ]
            )
        doc.table(
            [
                "arm",
                "test AUC [95% CI]",
                "ΔAUC vs real [95% CI]",
                "p",
                "ΔAUC vs duplicated real [95% CI]",
                "p",
                "sens",
                "spec",
                "seeds",
            ],
            rows,
        )
        evidence = attribute_evidence(layout, subtype, label)
        if evidence:
            doc.paragraph(evidence)
        if results.get("external"):
            independent_test_table(doc, results)
        roc = folder / "figures" / "roc_arms.png"
        if roc.is_file():
            shutil.copyfile(roc, figures / f"roc_{subtype}.png")
            doc.image(f"figures/roc_{subtype}.png", f"{subtype}: test ROC curves of every arm")
        curve = folder / "figures" / "ratio_curve.png"
        if results.get("ratio_curve") and curve.is_file():
            shutil.copyfile(curve, figures / f"ratio_curve_{subtype}.png")
            doc.image(
                f"figures/ratio_curve_{subtype}.png",
                f"{subtype}: ΔAUC vs real only against the synthetic (or duplicated) to real ratio",
            )
        doc.paragraph(f"Per-arm detail: {folder / 'report.html'}")


def quality_rows(subtype: str, quality: dict) -> list[list[str]]:
    """One row for the real-vs-real reference, then one per synthetic set; FD also in units of
    the reference (how far from real, measured in real-to-real distances)."""
    ref = quality["real_vs_real"]
    scale = ref["frechet"] if ref["frechet"] > 0 else float("nan")
    rows = [
        [
            f"{subtype} ({quality['label']})",
            "real train vs held-out",
            f"{quality['n_train']} / {quality['n_held_out']}",
            fmt(ref["frechet"], 2),
            "1",
            fmt(ref["kid"], 4),
            fmt(ref["precision"], 2),
            fmt(ref["recall"], 2),
            "",
            "",
        ]
    ]
    for mode, row in quality["modes"].items():
        train, held = row["vs_train"], row["vs_held_out"]
        rows.append(
            [
                "",
                mode,
                str(row["n"]),
                fmt(train["frechet"], 2),
                fmt(train["frechet"] / scale, 1),
                fmt(train["kid"], 4),
                fmt(train["precision"], 2),
                fmt(train["recall"], 2),
                fmt(held["frechet"], 2),
                fmt(row["memorized_fraction"], 2),
            ]
        )
    return rows


QUALITY_HEADER = [
    "task",
    "set",
    "n",
    "FD",
    "FD ÷ real-real",
    "KID",
    "precision",
    "recall",
    "FD vs held-out",
    "memorized",
]


def quality_section(doc: Document, layout: Layout, subtypes: list[str]) -> None:
    """FD, KID, precision/recall and the memorization test in the domain CLIP's space (and in
    Inception space when the run had local Inception weights)."""
    found = {}
    for subtype in subtypes:
        quality = load(layout.filtered(subtype) / "quality" / "quality.json")
        if quality and "skipped" not in quality:
            found[subtype] = quality
    if not found:
        return
    doc.heading("Synthetic-data quality (domain CLIP image space)")
    doc.paragraph(
        "Each generated set against the real train images of its class (held-out: valid + test "
        "cases, measured only). Read FD and KID in units of the first row, the distance between "
        "two real sets of the class. Precision: share of synthetic images inside the real "
        "k-NN manifold (k = 3); recall: share of real images inside the synthetic one. Memorized: "
        "share of synthetic images nearer to a train image than any held-out real image is."
    )
    doc.table(QUALITY_HEADER, [r for s, q in found.items() for r in quality_rows(s, q)])
    inception = {
        s: q["inception"] | {"label": q["label"]} for s, q in found.items() if "inception" in q
    }
    if inception:
        doc.heading("Synthetic-data quality (InceptionV3 space, local weights)", 3)
        doc.table(QUALITY_HEADER, [r for s, q in inception.items() for r in quality_rows(s, q)])


def memorization_section(doc: Document, layout: Layout, subtypes: list[str]) -> None:
    doc.heading("Memorization check")
    doc.paragraph(
        "Each generated image against its nearest real train image (candidates by coarse "
        "layout, verdict by full-size SSIM); the near-copy threshold is the 99th percentile of "
        "real held-out images' nearest-train SSIM (different patients). 'Unexplained' flags "
        "are near-copies of a real image that was not one of the image's own condition sources."
    )
    rows = []
    for subtype in subtypes:
        for mode in ("diversify", "reference"):
            evaluation = load(layout.generated(subtype) / mode / "evaluation.json")
            if evaluation is None:
                continue
            memo = evaluation["memorization"]
            rows.append(
                [
                    subtype,
                    mode,
                    memo.get("n"),
                    fmt(memo.get("ssim_median")),
                    fmt(memo.get("ssim_max")),
                    fmt(memo.get("threshold")),
                    fmt(memo.get("fraction_flagged")),
                    fmt(memo.get("fraction_flagged_unexplained")),
                ]
            )
    doc.table(
        [
            "subtype",
            "mode",
            "images",
            "SSIM median",
            "SSIM max",
            "threshold",
            "flagged",
            "flagged, unexplained",
        ],
        rows,
    )


def cost_section(doc: Document, root: Path) -> None:
    doc.heading("Time and peak memory per stage")
    timings = load(root / "timings.json") or {"stages": []}
    rows = [
        [
            s["stage"],
            f"{s['seconds']:.0f}" + (" (earlier run)" if s["skipped"] else ""),
            f"{s['peak_rss_mb']:.0f}",
            fmt(s.get("peak_gpu_mb"), 0),
        ]
        for s in timings["stages"]
    ]
    total = sum(s["seconds"] for s in timings["stages"])
    rows.append(["total", f"{total:.0f} ({total / 60:.1f} min)", "", ""])
    doc.table(["stage", "wall seconds", "peak RSS MB (process tree)", "peak GPU MB"], rows)


def build_document(run_dir: Path) -> Document:
    layout = Layout(run_dir.resolve())
    config = load(layout.root / "pipeline_config.json") or {}
    figures = layout.report / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    splits = load(layout.splits) or {}
    subtypes = config.get("subtypes") or splits.get("tasks", [])
    doc = Document(f"Tiger run report: {layout.root.name}")
    doc.paragraph(
        f"Run folder {layout.root}; profile '{config.get('profile')}'; data "
        f"'{config.get('data', {}).get('source')}'; rare subtypes {', '.join(subtypes)}."
    )
    if config.get("profile") in ("toy", "quick") and not config.get(
        "pretrained_model_name_or_path"
    ):
        doc.warning(
            "CPU profile with tiny models trained from scratch: every stage did its real job, "
            "but image quality is toy-level; read the numbers as a check of the pipeline, not "
            "as a result about synthetic data. Use the long or gpu profile for results."
        )
    dataset_section(doc, layout, figures)
    augment = config.get("generation", {}).get("augment", "subtype")
    labels = augment_labels(splits, subtypes, augment)
    generation_section(doc, layout, labels, figures)
    filtering_section(doc, layout, subtypes, figures)
    classifier_section(doc, layout, labels, figures)
    quality_section(doc, layout, subtypes)
    memorization_section(doc, layout, subtypes)
    cost_section(doc, layout.root)
    doc.heading("Exact config and versions")
    doc.table(["package", "version"], versions())
    doc.code(json.dumps(config, indent=2))
    return doc


def write_report(run_dir: str | Path) -> Path:
    """Write RUN/report/report.md and report.html; returns the HTML path."""
    doc = build_document(Path(run_dir))
    folder = Layout(Path(run_dir).resolve()).report
    write_text(folder / "report.md", doc.markdown())
    write_text(folder / "report.html", doc.html())
    return folder / "report.html"


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m scripts.pipeline.report RUN_DIR", file=sys.stderr)
        return 2
    print(write_report(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
