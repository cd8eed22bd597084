"""`phantom_comparison --curve-only`: a later run's ratio curve replaces the old one and
nothing else; what stays missing is said."""

from __future__ import annotations

import copy

import pytest

from benchmarks.phantom_comparison import merge_curves


def curve_row(ratio: float, arm: str, delta: float) -> dict:
    return {"ratio": ratio, "arm": arm, "external_delta_auc": delta}


@pytest.fixture
def existing() -> tuple[dict, dict]:
    arms = {"real": {"auc": 0.68}, "dup_real": {"auc": 0.69}}
    task = {
        "arms": arms,
        "ratio_curve": [curve_row(1, "dup_real", 0.01)],
        "partial": True,
        "missing": ["ratio_10/dup_real", "ratio_10/synthetic_filtered"],
    }
    comparison = {"runs": ["runs/old"], "paper": {}, "FTC": task}
    gain = {"FTC": {"arms": arms, "partial": True, "missing": list(task["missing"])}}
    return comparison, gain


def test_a_finished_curve_replaces_the_old_one_and_clears_partial(existing):
    comparison, gain = existing
    arms_before = copy.deepcopy(comparison["FTC"]["arms"])
    curve = [curve_row(r, a, 0.02) for r in (1, 10) for a in ("dup_real", "synthetic_filtered")]
    merge_curves(comparison, gain, [("FTC", {"ratio_curve": curve})], "runs/new")
    task = comparison["FTC"]
    assert task["ratio_curve"] == curve
    assert task["arms"] == arms_before
    assert "partial" not in task and "missing" not in task
    assert "partial" not in gain["FTC"]
    source = task["ratio_curve_source"]
    assert (source["run"], source["partial"]) == ("runs/new", False) and source["written"]
    assert comparison["runs"] == ["runs/old", "runs/new"]


def test_unfinished_ratio_rows_stay_missing_and_missing_arms_are_kept(existing):
    comparison, gain = existing
    comparison["FTC"]["missing"].append("mixup")
    partial = {
        "ratio_curve": [curve_row(1, "dup_real", 0.02)],
        "missing": ["real", "ratio_5/dup_real"],  # a run's own missing arm is not the table's
    }
    merge_curves(comparison, gain, [("FTC", partial)], "runs/new")
    assert comparison["FTC"]["missing"] == ["mixup", "ratio_5/dup_real"]
    assert comparison["FTC"]["partial"] is True
    assert gain["FTC"]["missing"] == ["ratio_5/dup_real"]
    assert comparison["FTC"]["ratio_curve_source"]["partial"] is True


def test_a_task_the_table_lacks_is_refused(existing):
    comparison, gain = existing
    with pytest.raises(SystemExit, match="MTC"):
        merge_curves(comparison, gain, [("MTC", {"ratio_curve": []})], "runs/new")
