"""Filtering rules, the filtered manifest and report, and clear errors on corrupted inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generation.filtering import cli
from generation.filtering.commands import run_filter
from generation.filtering.images import open_rgb
from generation.filtering.manifest import read_manifest
from generation.filtering.off_distribution import real_reference
from generation.filtering.select import (
    CLIP_QUANTILE,
    CLIP_THRESHOLD,
    DUPLICATE,
    MOSO_PRUNED,
    OFF_DISTRIBUTION,
    FilterConfig,
    near_copies,
    select,
)
from generation.filtering.standin import add_corruptions, dataset_as_manifest, manifest_row
from metadata.atomic import save_png, write_jsonl
from metadata.records import MetadataError

LABELS = ["FTC"] * 6 + ["MTC"] * 4
CLIP = np.array([10, 50, 30, 40, 20, 60, 5, 70, 80, 90], dtype=float)
MOSO = np.array([0.6, 0.1, 0.5, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.1])


def test_clip_threshold_drops_only_scores_below_it():
    reasons = select(LABELS, CLIP, MOSO, FilterConfig(clip_threshold=30.0, drop_duplicates=False))
    dropped = [i for i, r in enumerate(reasons) if r]
    assert dropped == [0, 4, 6] and {reasons[i] for i in dropped} == {CLIP_THRESHOLD}


def test_clip_quantile_is_applied_within_each_class():
    reasons = select(LABELS, CLIP, MOSO, FilterConfig(clip_quantile=0.5, drop_duplicates=False))
    # FTC: 6 images -> lowest 3 (10, 20, 30); MTC: 4 images -> lowest 2 (5, 70)
    assert [i for i, r in enumerate(reasons) if r] == [0, 2, 4, 6, 7]
    assert all(r == CLIP_QUANTILE for r in reasons if r)


def test_moso_prunes_lowest_per_class_among_clip_survivors():
    config = FilterConfig(clip_threshold=15.0, moso_prune_ratio=0.5, drop_duplicates=False)
    reasons = select(LABELS, CLIP, MOSO, config)
    # FTC survivors 1..5 (5 images) -> floor(2.5)=2 lowest MoSo: 1 (0.1), 3 (0.2)
    # MTC survivors 7,8,9 -> floor(1.5)=1 lowest MoSo: 9 (0.1)
    assert reasons[0] == CLIP_THRESHOLD and reasons[6] == CLIP_THRESHOLD
    assert [i for i, r in enumerate(reasons) if r == MOSO_PRUNED] == [1, 3, 9]
    kept = [i for i, r in enumerate(reasons) if not r]
    assert kept == [2, 4, 5, 7, 8]


def test_near_copies_are_dropped_before_moso_and_the_first_copy_is_kept():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(10, 64))
    vectors[7] = vectors[2] + 0.01 * rng.normal(size=64)  # a near-copy, filed under MTC
    vectors[9] = -vectors[3]  # anti-correlated is not a copy
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    config = FilterConfig(moso_prune_ratio=0.5)
    reasons = select(LABELS, CLIP, MOSO, config, vectors)
    assert [i for i, r in enumerate(reasons) if r == DUPLICATE] == [7]
    # MTC survivors 6, 8, 9 (7 is a copy) -> floor(1.5) = 1 lowest MoSo: 9
    assert [i for i, r in enumerate(reasons) if r == MOSO_PRUNED] == [1, 3, 4, 9]
    with pytest.raises(ValueError, match="thumbnails"):
        select(LABELS, CLIP, MOSO, config)


def one_at_a_time(indices, vectors, threshold):
    """The rule as stated: an image is a copy if it matches any earlier kept image."""
    kept, copies = [], set()
    for i in indices:
        if any(float(vectors[k] @ vectors[i]) >= threshold for k in kept):
            copies.add(i)
        else:
            kept.append(i)
    return copies


@pytest.mark.parametrize("block", [1, 5, 7, 1024])
def test_blocked_near_copies_equal_the_one_at_a_time_rule(block):
    rng = np.random.default_rng(1)
    bases = rng.normal(size=(12, 32))
    rows = []
    for _ in range(60):  # clusters of noisy copies, so chains cross block edges
        base = bases[rng.integers(len(bases))]
        rows.append(base + rng.uniform(0.0, 0.35) * rng.normal(size=32))
    vectors = np.array(rows)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = [int(i) for i in rng.permutation(60)[:50]]
    expected = one_at_a_time(order, vectors, 0.95)
    assert 5 < len(expected) < 45  # the case has copies and keepers
    # a copy of a dropped copy that is unlike every kept image is kept: the rule is greedy
    assert near_copies(order, vectors, 0.95, block=block) == expected


def test_filter_drops_exact_copies_from_the_manifest(tmp_path):
    manifest = write_gen(tmp_path / "gen", n=8)
    rows = add_corruptions(tmp_path / "gen", wrong_class=0, noise=0, duplicates=2, seed=3)
    summary = run_filter(manifest, tmp_path / "filtered", FilterConfig(), None, None)
    dropped = {r["id"]: r["drop_reason"] for r in summary["dropped"]}
    assert dropped == {r["id"]: DUPLICATE for r in rows if r.get("corruption") == "duplicate"}
    kept = FilterConfig(drop_duplicates=False)
    assert run_filter(manifest, tmp_path / "kept", kept, None, None)["kept"] == 10


def test_off_distribution_frames_go_first_and_leave_the_class_quantile():
    flags = np.zeros(len(LABELS), dtype=bool)
    flags[0] = True
    config = FilterConfig(clip_quantile=0.5, drop_duplicates=False)
    reasons = select(LABELS, CLIP, MOSO, config, off_distribution=flags)
    # FTC: 0 is off-distribution; of 1..5 the lowest 2 CLIP (20, 30); MTC as before (5, 70)
    assert [i for i, r in enumerate(reasons) if r] == [0, 2, 4, 6, 7]
    assert reasons[0] == OFF_DISTRIBUTION and reasons[2] == CLIP_QUANTILE
    with pytest.raises(ValueError, match="one flag per image"):
        select(LABELS, CLIP, MOSO, config, off_distribution=flags[:3])


def test_filter_drops_noise_unlike_any_real_frame(tmp_path, phantom_dataset):
    """Real frames (train or held-out cases) stay; pure-noise frames go, whatever their scores."""
    manifest = dataset_as_manifest(phantom_dataset, tmp_path / "gen")
    rows = add_corruptions(tmp_path / "gen", wrong_class=0, noise=3, duplicates=0, seed=2)
    config = FilterConfig(drop_duplicates=False)
    summary = run_filter(manifest, tmp_path / "out", config, None, None, phantom_dataset)
    noise = {r["id"] for r in rows if r["corruption"] == "noise"}
    assert {r["id"]: r["drop_reason"] for r in summary["dropped"]} == {
        i: OFF_DISTRIBUTION for i in noise
    }
    settings = summary["settings"]["off_distribution"]
    assert settings["threshold"] == pytest.approx(0.5 * settings["held_out_minimum"])
    written = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").open()]
    nearest = {r["id"]: r["nearest_real_correlation"] for r in written}
    # the least typical held-out frame sets the scale (it is one of the stand-ins)
    least = min(v for i, v in nearest.items() if i not in noise)
    assert least == pytest.approx(settings["held_out_minimum"])
    assert max(nearest[i] for i in noise) < settings["threshold"]
    # at fraction 1 that frame is the bar itself and is still kept
    strict_config = FilterConfig(drop_duplicates=False, off_distribution_fraction=1.0)
    strict = run_filter(manifest, tmp_path / "strict", strict_config, None, None, phantom_dataset)
    assert {r["id"] for r in strict["dropped"]} == noise


def test_off_distribution_reference_needs_held_out_cases(phantom_dataset):
    with pytest.raises(MetadataError, match="held-out"):
        real_reference(phantom_dataset, holdout_fraction=0.0)
    with pytest.raises(ValueError, match="fraction"):
        FilterConfig(off_distribution_fraction=0.0)


def test_filter_config_rejects_contradictions():
    with pytest.raises(ValueError, match="not both"):
        FilterConfig(clip_threshold=1.0, clip_quantile=0.1)
    with pytest.raises(ValueError, match="moso_prune_ratio"):
        FilterConfig(moso_prune_ratio=1.0)


def write_gen(folder: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        label = "FTC" if k % 2 else "MTC"
        row = manifest_row(
            f"img{k}", label, f"malignant, {label}, solid", "bright", attributes={"case": k}
        )
        save_png(folder / row["file_name"], rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        rows.append(row)
    write_jsonl(folder / "manifest.jsonl", rows)
    return folder / "manifest.jsonl"


def write_scores(path: Path, key: str, values: dict) -> Path:
    write_jsonl(path, ({"id": k, key: v} for k, v in values.items()))
    return path


def test_filter_writes_manifest_with_scores_and_report(tmp_path):
    manifest = write_gen(tmp_path / "gen")
    clip = write_scores(tmp_path / "c.jsonl", "clip_score", {f"img{k}": 10.0 * k for k in range(6)})
    moso = write_scores(tmp_path / "m.jsonl", "moso_score", {f"img{k}": -k for k in range(6)})
    out = tmp_path / "filtered"
    summary = run_filter(
        manifest, out, FilterConfig(clip_threshold=15, moso_prune_ratio=0.5), clip, moso
    )
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"img{k}" for k in range(6)]
    for row in rows:
        assert {"clip_score", "moso_score", "kept", "drop_reason"} <= set(row)
        assert Path(row["file_name"]).is_absolute() and Path(row["file_name"]).is_file()
        assert row["kept"] == (row["drop_reason"] == "")
    reasons = {r["id"]: r["drop_reason"] for r in rows}
    # img0, img1 below 15; MTC survivors img2, img4 -> prune img4 (lowest MoSo); FTC: img3, img5
    assert reasons == {
        "img0": CLIP_THRESHOLD,
        "img1": CLIP_THRESHOLD,
        "img2": "",
        "img3": "",
        "img4": MOSO_PRUNED,
        "img5": MOSO_PRUNED,
    }
    assert summary["kept"] == 2
    assert "moso_pruned" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["total"] == 6


def test_cli_filter_runs_end_to_end(tmp_path, capsys):
    manifest = write_gen(tmp_path / "gen")
    clip = write_scores(tmp_path / "c.jsonl", "clip_score", {f"img{k}": 10.0 * k for k in range(6)})
    cli.main(
        [
            "filter",
            "--manifest",
            str(manifest.parent),
            "--out",
            str(tmp_path / "f"),
            "--clip-scores",
            str(clip),
            "--clip-quantile",
            "0.34",
        ]
    )
    assert "kept 4 of 6" in capsys.readouterr().out


def test_corruptions_are_labelled_and_readable(tmp_path):
    write_gen(tmp_path / "gen", n=8)
    manifest_file = tmp_path / "gen" / "manifest.jsonl"
    before = {row["id"]: row for row in map(json.loads, manifest_file.open())}
    rows = add_corruptions(tmp_path / "gen", wrong_class=2, noise=2, duplicates=2, seed=1)
    images = read_manifest(tmp_path / "gen")
    assert len(images) == 12  # 8 clean, 2 of them moved to wrong-class rows, + 2 noise, 2 copies
    kinds = [r.get("corruption", "") for r in rows]
    assert kinds.count("wrong_class") == kinds.count("noise") == kinds.count("duplicate") == 2
    by_id = {im.id: im for im in images}
    for row in rows:
        if row["corruption"] == "duplicate":
            original = by_id[row["reference"]]
            assert open_rgb(by_id[row["id"]].path).tobytes() == open_rgb(original.path).tobytes()
        if row["corruption"] == "wrong_class":
            # relabelled, and its source row (and file) left the pool: no copy remains
            assert row["label"] != row["true_label"] and row["reference"] not in by_id
            source = before[row["reference"]]
            assert (row["true_label"], row["true_attributes"]) == (
                source["label"],
                source["attributes"],
            )
    assert len(list((tmp_path / "gen" / "images").glob("*.png"))) == 12


def test_uniform_noise_labels_spread_over_classes(tmp_path):
    counts = {}
    for mode in ("sampled", "uniform"):
        gen = tmp_path / mode
        manifest = write_gen(gen, n=10)
        rows = [json.loads(line) for line in manifest.read_text().splitlines()]
        for k, row in enumerate(rows):  # 9 MTC, 1 FTC
            row["label"] = "FTC" if k == 0 else "MTC"
            row["text_nd"] = f"malignant, {row['label']}, solid"
        write_jsonl(manifest, rows)
        out = add_corruptions(gen, wrong_class=0, noise=60, duplicates=0, seed=0, noise_labels=mode)
        noise = [row for row in out if row.get("corruption") == "noise"]
        assert all(row["label"] in row["text_nd"] for row in noise)  # prompt of its own class
        counts[mode] = sum(row["label"] == "FTC" for row in noise)
    assert counts["sampled"] <= 15 < counts["uniform"]  # expected 6 vs 30 of 60
    with pytest.raises(ValueError, match="noise_labels"):
        add_corruptions(tmp_path / "uniform", 0, 1, 0, noise_labels="balanced")


# ---- corrupted inputs: every error names the file (and line) ----


def test_missing_manifest_key_names_file_and_line(tmp_path):
    manifest = write_gen(tmp_path / "gen")
    lines = manifest.read_text().splitlines()
    row = json.loads(lines[2])
    del row["label"]
    lines[2] = json.dumps(row)
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetadataError, match=r"manifest\.jsonl:3: missing key\(s\) label"):
        read_manifest(manifest)


def test_malformed_json_and_duplicate_ids_are_reported(tmp_path):
    manifest = write_gen(tmp_path / "gen")
    text = manifest.read_text()
    manifest.write_text(text + "{not json\n")
    with pytest.raises(MetadataError, match=r"manifest\.jsonl:7: malformed JSON"):
        read_manifest(manifest)
    first = text.splitlines()[0]
    manifest.write_text(text + first + "\n")
    with pytest.raises(MetadataError, match=r":7: duplicate id 'img0' \(first on line 1\)"):
        read_manifest(manifest)


def test_missing_manifest_is_reported(tmp_path):
    with pytest.raises(MetadataError, match="synthetic manifest not found"):
        read_manifest(tmp_path / "nowhere")


def test_unreadable_image_names_the_file(tmp_path):
    manifest = write_gen(tmp_path / "gen")
    broken = read_manifest(manifest)[1].path
    broken.write_bytes(b"this is not a png")
    with pytest.raises(MetadataError, match=rf"{broken.name}: unreadable image"):
        open_rgb(broken)
    broken.unlink()
    with pytest.raises(MetadataError, match=rf"{broken.name}: image file not found"):
        open_rgb(broken)


def test_missing_scores_fail_before_anything_is_written(tmp_path):
    manifest = write_gen(tmp_path / "gen")
    clip = write_scores(tmp_path / "c.jsonl", "clip_score", {"img0": 1.0})
    out = tmp_path / "filtered"
    with pytest.raises(MetadataError, match=r"c\.jsonl: no score for 5 id\(s\)"):
        run_filter(manifest, out, FilterConfig(clip_threshold=1.0), clip, None)
    assert not (out / "manifest.jsonl").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "img0", "clip_score": "high"}\n')
    with pytest.raises(MetadataError, match=r"bad\.jsonl:1: bad score row"):
        run_filter(manifest, out, FilterConfig(clip_threshold=1.0), bad, None)
