"""The report's checks read back as numbers with CIs, and two runs compared check by check."""

from __future__ import annotations

import json

import pytest

from scripts.pipeline.checks import Check, compare, run_checks


def write(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def fake_run(root, fg_iou: float, auc: float) -> None:
    """The files the report reads its checks from, with chosen values."""
    folder = root / "generate" / "FTC" / "diversify"
    write(
        folder / "control.json",
        {
            "fg_iou": {"mean": fg_iou, "ci95": [fg_iou - 0.05, fg_iou + 0.05], "n": 32},
            "bg": {"pearson_r": 0.4, "pearson_ci95": [0.1, 0.7]},
        },
    )
    write(
        folder / "evaluation.json",
        {"agreement": {"echogenicity": {"agreement": 0.75, "ci95": [0.6, 0.9]}}},
    )
    row = {"auc": auc, "auc_low": auc - 0.03, "auc_high": auc + 0.03}
    write(
        root / "classifier" / "FTC" / "results.json",
        {
            "arms": {"real": {"auc": 0.5, "auc_low": 0.3, "auc_high": 0.7}},
            "external": {"real": row},
        },
    )


def test_checks_are_read_with_their_intervals_and_the_independent_test_set_wins(tmp_path):
    fake_run(tmp_path, fg_iou=0.5, auc=0.8)
    checks = run_checks(tmp_path)
    assert checks == {
        "FTC/diversify/fg_iou": Check(0.5, 0.45, 0.55),
        "FTC/diversify/bg_r": Check(0.4, 0.1, 0.7),
        "FTC/diversify/agreement/echogenicity": Check(0.75, 0.6, 0.9),
        "FTC/auc_independent/real": Check(0.8, pytest.approx(0.77), pytest.approx(0.83)),
    }


def test_compare_flags_a_check_that_left_both_intervals(tmp_path):
    fake_run(tmp_path / "old", fg_iou=0.5, auc=0.8)
    fake_run(tmp_path / "new", fg_iou=0.52, auc=0.7)  # IoU moved inside its CI, AUC did not
    result = compare(run_checks(tmp_path / "old"), run_checks(tmp_path / "new"))
    assert result["shared"] == 4
    assert result["neither_inside_the_other"] == ["FTC/auc_independent/real"]
    assert result["candidate_inside_baseline_ci"] == 3
    row = result["checks"]["FTC/diversify/fg_iou"]
    assert row["difference"] == pytest.approx(0.02) and row["baseline_inside_candidate_ci"]


def test_compare_lists_checks_only_one_run_has(tmp_path):
    old = {"a": Check(1.0, 0.0, 2.0), "b": Check(1.0, 0.0, 2.0)}
    new = {"a": Check(1.5, 1.2, 2.0), "c": Check(0.0, 0.0, 0.0)}
    result = compare(old, new)
    assert result["only_in_baseline"] == ["b"] and result["only_in_candidate"] == ["c"]
    assert result["checks"]["a"]["candidate_inside_baseline_ci"]
    assert not result["checks"]["a"]["baseline_inside_candidate_ci"]
