"""The experiment's summary: each run's bootstrap AUCs are scored once and shared, and the
shared scoring gives exactly what the one-call CI and paired-difference functions give."""

import json

import numpy as np

import classifier.experiment as experiment
from classifier.config import EvalConfig, ExperimentConfig
from classifier.experiment import METRIC_KEYS, PREDICTIONS_FILE, summarize
from classifier.metrics import auc_ci, paired_difference

SEEDS = (0, 1, 2)


def write_arms(root, labels, cases, arm_scores) -> dict:
    """Predictions files of finished runs, and their metrics as `run_one` returns them."""
    runs = {}
    for arm, by_seed in arm_scores.items():
        runs[arm] = {}
        for seed, scores in zip(SEEDS, by_seed):
            folder = root / arm / f"seed_{seed}"
            folder.mkdir(parents=True)
            split = {"labels": labels.tolist(), "scores": scores.tolist(), "case_ids": cases}
            (folder / PREDICTIONS_FILE).write_text(json.dumps({"test": split}))
            runs[arm][seed] = {key: 0.5 for key in METRIC_KEYS}
    return runs


def test_summary_scores_each_run_once_and_matches_the_one_call_functions(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    labels = np.array([0] * 60 + [1] * 20)
    cases = [f"case{i // 2}" for i in range(len(labels))]
    arm_scores = {
        arm: [labels * strength + rng.normal(0, 1, len(labels)) for _ in SEEDS]
        for arm, strength in (("real", 0.8), ("dup_real", 1.0), ("synthetic_filtered", 1.5))
    }
    runs = write_arms(tmp_path, labels, cases, arm_scores)
    config = ExperimentConfig(eval=EvalConfig(n_bootstrap=200))

    scored = []
    original = experiment.seed_aucs

    def counting(labels, scores, resamples):
        scored.append(len(resamples))
        return original(labels, scores, resamples)

    monkeypatch.setattr(experiment, "seed_aucs", counting)
    matrices: dict = {}
    arms = summarize(config, runs, tmp_path, matrices=matrices)["arms"]
    assert len(scored) == 3 and set(scored) == {200}  # three runs, each once
    # A second summary sharing the store (as the ratio curve's rows do) scores nothing again.
    summarize(
        config,
        {"real": runs["real"], "dup_real": runs["dup_real"]},
        tmp_path,
        "test",
        None,
        matrices,
    )
    assert len(scored) == 3

    groups = np.array(cases)
    settings = (200, 0.95, 0, groups)
    for arm, scores in arm_scores.items():
        expected = auc_ci(labels, np.array(scores), *settings, resample_seeds=True)
        assert (arms[arm]["auc"], arms[arm]["auc_low"], arms[arm]["auc_high"]) == (
            expected.value,
            expected.low,
            expected.high,
        )
    for prefix, control in (("delta", "real"), ("dup_delta", "dup_real")):
        expected = paired_difference(
            labels,
            np.array(arm_scores["synthetic_filtered"]),
            np.array(arm_scores[control]),
            *settings,
            resample_seeds=True,
        )
        row = arms["synthetic_filtered"]
        assert row[f"{prefix}_auc"] == expected.value
        assert (row[f"{prefix}_low"], row[f"{prefix}_high"]) == (expected.low, expected.high)
        assert row[f"{prefix}_p"] == expected.p_value
    assert arms["synthetic_filtered"]["dup_delta_auc"] > 0  # the stronger arm is ahead
    assert "dup_delta_auc" not in arms["real"] and "delta_auc" not in arms["real"]
