"""What was dropped and why, as JSON (for scripts) and Markdown (for people)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from metadata.atomic import write_json, write_text


def summarise(rows: list[dict], settings: dict) -> dict:
    by_class: dict[str, Counter] = {}
    by_corruption: dict[str, Counter] = {}
    for row in rows:
        reason = row["drop_reason"] or "kept"
        by_class.setdefault(row["label"], Counter())[reason] += 1
        if "corruption" in row:
            kind = row["corruption"] or "clean"
            by_corruption.setdefault(kind, Counter())[reason] += 1
    dropped = sorted(
        (r for r in rows if not r["kept"]), key=lambda r: (r["drop_reason"], r["label"], r["id"])
    )
    return {
        "settings": settings,
        "total": len(rows),
        "kept": sum(1 for r in rows if r["kept"]),
        "by_class": {k: dict(v) for k, v in sorted(by_class.items())},
        "by_corruption": {k: dict(v) for k, v in sorted(by_corruption.items())},
        "dropped": [
            {k: r.get(k) for k in ("id", "label", "drop_reason", "clip_score", "moso_score")}
            for r in dropped
        ],
    }


def markdown(summary: dict) -> str:
    lines = [
        "# Filtering report",
        "",
        f"Settings: `{summary['settings']}`",
        "",
        f"Kept {summary['kept']} of {summary['total']} synthetic images.",
        "",
        "| class | kept | dropped (by reason) |",
        "|---|---|---|",
    ]
    for label, counts in summary["by_class"].items():
        reasons = ", ".join(f"{k}: {v}" for k, v in counts.items() if k != "kept") or "none"
        lines.append(f"| {label} | {counts.get('kept', 0)} | {reasons} |")
    if summary["by_corruption"]:
        lines += ["", "| corruption | outcome |", "|---|---|"]
        for kind, counts in summary["by_corruption"].items():
            lines.append(f"| {kind} | {dict(counts)} |")
    lines += [
        "",
        "## Dropped",
        "",
        "| id | class | reason | CLIP | MoSo |",
        "|---|---|---|---|---|",
    ]
    for row in summary["dropped"]:
        lines.append(
            f"| {row['id']} | {row['label']} | {row['drop_reason']} | "
            f"{fmt(row['clip_score'])} | {fmt(row['moso_score'])} |"
        )
    return "\n".join(lines) + "\n"


def fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def write_report(out_dir: Path, rows: list[dict], settings: dict) -> dict:
    summary = summarise(rows, settings)
    write_json(out_dir / "report.json", summary)
    write_text(out_dir / "report.md", markdown(summary))
    return summary
