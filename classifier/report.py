"""Markdown + HTML experiment report (tables, ROC plots, sample grids) in the run folder."""

from __future__ import annotations

import html
import random
from pathlib import Path

import numpy as np
from PIL import Image

from classifier.evaluate import plot_roc
from classifier.experiment_text import ARM_TITLES, describe_arms
from classifier.layout import ImageItem
from metadata.atomic import save_png, write_text


def sample_grid(items: list[ImageItem], path: Path, n: int = 8, thumb: int = 80) -> bool:
    """Up to n thumbnails in one row (seeded choice); False when there is nothing to show."""
    if not items:
        return False
    chosen = random.Random(0).sample(items, min(n, len(items)))
    canvas = Image.new("RGB", (thumb * len(chosen), thumb))
    for index, item in enumerate(chosen):
        with Image.open(item.path) as image:
            canvas.paste(image.convert("RGB").resize((thumb, thumb)), (index * thumb, 0))
    save_png(path, canvas)
    return True


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def delta_cell(row: dict, prefix: str) -> str:
    if f"{prefix}_auc" not in row:
        return "—"
    low, high = row[f"{prefix}_low"], row[f"{prefix}_high"]
    return f"{row[f'{prefix}_auc']:+.3f} [{low:+.3f}, {high:+.3f}]"


def arm_table(results: dict) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "AUC (seed mean) [95% CI]", "SD over seeds", "ΔAUC vs real [95% CI]", "p"]
    header += ["sens", "spec", "PPV", "NPV", "F1", "acc"]
    rows = []
    for arm, row in results["arms"].items():
        rows.append(
            [
                ARM_TITLES.get(arm, arm),
                f"{_fmt(row['auc'])} [{_fmt(row['auc_low'])}, {_fmt(row['auc_high'])}]",
                _fmt(row["auc_sd_over_seeds"]),
                delta_cell(row, "delta"),
                _fmt(row.get("delta_p", float("nan"))),
                *[
                    f"{_fmt(row[k], 2)}±{_fmt(row[k + '_sd'], 2)}"
                    for k in ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")
                ],
            ]
        )
    return header, rows


def external_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """Every arm on the independent test set: AUC and the paired Δ against real only and
    against the count-matched duplicated-real control."""
    header = ["arm", "AUC (seed mean) [95% CI]", "ΔAUC vs real [95% CI]", "p"]
    header += ["ΔAUC vs duplicated real [95% CI]", "p", "sens", "spec"]
    rows = []
    for arm, row in results["external"].items():
        rows.append(
            [
                ARM_TITLES.get(arm, arm),
                f"{_fmt(row['auc'])} [{_fmt(row['auc_low'])}, {_fmt(row['auc_high'])}]",
                delta_cell(row, "delta"),
                _fmt(row.get("delta_p", float("nan"))),
                delta_cell(row, "dup_delta"),
                _fmt(row.get("dup_delta_p", float("nan"))),
                _fmt(row["sensitivity"], 2),
                _fmt(row["specificity"], 2),
            ]
        )
    return header, rows


def run_table(results: dict) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "seed", "best epoch", "val AUC", "test AUC [95% CI]", "threshold"]
    header += ["TP", "FP", "TN", "FN", "sens", "spec", "PPV", "NPV", "F1", "acc"]
    rows = []
    for arm, by_seed in results["runs"].items():
        for seed, m in by_seed.items():
            rows.append(
                [arm, str(seed), str(m["best_epoch"]), _fmt(m["best_val_auc"])]
                + [f"{_fmt(m['auc'])} [{_fmt(m['auc_low'])}, {_fmt(m['auc_high'])}]"]
                + [_fmt(m["threshold"]), *(str(m[k]) for k in ("tp", "fp", "tn", "fn"))]
                + [_fmt(m[k], 2) for k in ("sensitivity", "specificity", "ppv", "npv", "f1")]
                + [_fmt(m["accuracy"], 2)]
            )
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plot_ratio_curve(rows: list[dict], path: Path, subtype: str) -> None:
    """ΔAUC vs real only (95% CI) against the synthetic-to-real ratio, one line per arm; on the
    independent test set when the rows have it (its CIs can tell the arms apart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    prefix = "external_" if rows and "external_delta_auc" in rows[0] else ""
    figure, axes = plt.subplots(figsize=(5, 3.6))
    for offset, arm in zip((-0.03, 0.03), ("dup_real", "synthetic_filtered")):
        own = [row for row in rows if row["arm"] == arm]
        ratios = np.array([row["ratio"] for row in own]) * (1 + offset)
        delta = np.array([row[f"{prefix}delta_auc"] for row in own])
        low = delta - np.array([row[f"{prefix}delta_low"] for row in own])
        high = np.array([row[f"{prefix}delta_high"] for row in own]) - delta
        axes.errorbar(ratios, delta, yerr=[low, high], marker="o", capsize=3, label=ARM_TITLES[arm])
    axes.axhline(0, color="grey", lw=0.8, ls="--")
    where = " (independent test set)" if prefix else ""
    axes.set(
        xscale="log",
        xlabel="synthetic (or duplicated) : real, rare class",
        ylabel=f"ΔAUC vs real{where}",
    )
    ticks = sorted({row["ratio"] for row in rows})
    axes.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_title(f"{subtype}: ratio curve")
    axes.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(
    root: Path,
    results: dict,
    layout: dict[str, list[ImageItem]],
    pools: dict[str, list[ImageItem]],
    counts: dict[int, int],
) -> Path:
    """report.md and report.html (same content) plus figures under root/figures/."""
    figures = root / "figures"
    labels = np.array([item.label for item in layout["test"]])
    curves = {
        ARM_TITLES.get(arm, arm): (labels, np.mean(np.array(scores), axis=0))
        for arm, scores in results["scores"].items()
    }
    subtype = results["setup"]["config"]["data"]["subtype"]
    plot_roc(curves, figures / "roc_arms.png", f"{subtype}: test ROC (seed-averaged scores)")
    for arm, scores in results["scores"].items():
        seed_curves = {
            f"seed {s}": (labels, np.array(row)) for s, row in zip(results["runs"][arm], scores)
        }
        plot_roc(seed_curves, figures / f"roc_{arm}.png", f"{subtype}: {arm}")
    grids = []
    for name, items in (
        ("real train, class 0 (benign)", [i for i in layout["train"] if i.label == 0]),
        (f"real train, class 1 ({subtype})", [i for i in layout["train"] if i.label == 1]),
        ("real test", layout["test"]),
        *((f"{ARM_TITLES.get(arm, arm)} pool", pool) for arm, pool in pools.items()),
    ):
        file = f"grid_{len(grids)}.png"
        if sample_grid(items, figures / file):
            grids.append((name, f"figures/{file}"))

    setup = results["setup"]
    counts_rows = [[split, str(c[0]), str(c[1])] for split, c in setup["real_counts"].items()] + [
        ["added per arm (dup/synthetic)", str(counts.get(0, 0)), str(counts.get(1, 0))]
    ]
    config = setup["config"]
    summary_line = (
        f"{config['model']['arch']}, {config['data']['image_size']} px, "
        f"{config['train']['epochs']} epochs max (patience {config['train']['patience']}, "
        f"selection from epoch {config['train'].get('min_epochs', 1)}), "
        f"{config['train']['optimizer']} lr {config['train']['lr']}, "
        f"imbalance: {config['train']['imbalance']}, seeds {config['seeds']}, "
        f"threshold: {config['eval']['threshold']} on validation, "
        f"{config['eval']['n_bootstrap']} bootstrap resamples by case and seed"
    )
    tables = [
        ("Data (real images per split and class)", (["split", "class 0", "class 1"], counts_rows)),
        ("Arms: seed-mean test AUC and paired difference to real-only", arm_table(results)),
        ("Every run", run_table(results)),
    ]
    if results.get("external"):
        counts_ext = setup["external_counts"]
        title = (
            f"Arms on the independent test set ({counts_ext[0]} class 0 / {counts_ext[1]} "
            "class 1, cases no stage has seen)"
        )
        tables.insert(2, (title, external_table(results)))
    arms_text = describe_arms(list(results["arms"]))
    notes = [f"Images added per class in arms 3–5: {counts} ({setup['extra_count_source']})."]
    for manifest in setup.get("stand_in_manifests", []):
        notes.append(
            f"STAND-IN synthetic images: {manifest} holds borrowed real-like images "
            "(not generated ones) and a coin-flip `kept` flag; arms 4/5 test the pipeline only."
        )
    md = [f"# Classifier experiment: {subtype}", "", summary_line, "", arms_text, ""]
    md += [f"**{note}**" if note.startswith("STAND-IN") else note for note in notes] + [""]
    body = [f"<h1>Classifier experiment: {html.escape(subtype)}</h1>"]
    body += [f"<p>{html.escape(summary_line)}</p>", f"<pre>{html.escape(arms_text)}</pre>"]
    body += [f"<p><b>{html.escape(note)}</b></p>" for note in notes]
    for title, (header, rows) in tables:
        md += [f"## {title}", "", markdown_table(header, rows), ""]
        body += [f"<h2>{html.escape(title)}</h2>", html_table(header, rows)]
    if results.get("ratio_curve"):
        plot_ratio_curve(results["ratio_curve"], figures / "ratio_curve.png", subtype)
        md += ["## Ratio curve", "", "![ratio curve](figures/ratio_curve.png)", ""]
        body += ["<h2>Ratio curve</h2>", '<img src="figures/ratio_curve.png">']
    md += ["## ROC curves", "", "![arms](figures/roc_arms.png)", ""]
    body += ["<h2>ROC curves</h2>", '<img src="figures/roc_arms.png">']
    for arm in results["scores"]:
        md.append(f"![{arm}](figures/roc_{arm}.png)")
        body.append(f'<img src="figures/roc_{arm}.png">')
    md += ["", "## Samples", ""]
    body.append("<h2>Samples</h2>")
    for name, file in grids:
        md += [f"**{name}**", "", f"![{name}]({file})", ""]
        body += [f"<h3>{html.escape(name)}</h3>", f'<img src="{file}">']
    write_text(root / "report.md", "\n".join(md) + "\n")
    style = "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 6px}"
    page = f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head>"
    write_text(root / "report.html", page + "<body>" + "\n".join(body) + "</body></html>\n")
    return root / "report.md"
