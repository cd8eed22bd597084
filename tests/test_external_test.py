"""The large independent test set: a test-only phantom layout, case-disjoint from the run, that
every arm is also scored on (paired deltas included), also for runs finished before it."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from classifier.cli import main as classifier_main
from classifier.layout import read_layout
from classifier.metrics import auc
from classifier.toydata import build_toy_layout, build_toy_manifest
from metadata.external_test import CASE_PREFIX, INFO_FILE, build_external_test
from metadata.phantom import PhantomConfig

SUBTYPE = "FTC"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_phantom_external_set_is_test_only_and_disjoint_from_the_runs_phantom(
    tmp_path, phantom_dataset
):
    prevalence = {"benign": 0.5, "FTC": 0.25, "MTC": 0.25}
    out = build_external_test(tmp_path / "ext", 60, PhantomConfig(64, prevalence=prevalence))
    info = json.loads((out / INFO_FILE).read_text())
    assert sum(info["rendered_per_class"].values()) == 60
    assert set(info["tasks"]) == {"FTC", "MTC"}  # PTC was never drawn: no task without positives
    assert not (out / "PTC").exists()
    for task, counts in info["tasks"].items():
        layout = read_layout(out, task, ("test",))["test"]
        assert [i.label for i in layout].count(1) == counts["positive"] > 0
        assert [i.label for i in layout].count(0) == counts["negative"] > 0
        assert all(i.origin == "real" and i.case_id.startswith(CASE_PREFIX) for i in layout)
        assert {p.name for p in (out / task).iterdir()} == {"test"}
    # Another seed than the run's own phantom (seed 1 in the fixture): no frame in common.
    own = {digest(p) for p in (phantom_dataset / "init_image").glob("*.png")}
    ours = {digest(p) for p in (out / "frames").glob("*.png")}
    assert len(ours) == len(list((out / "frames").glob("*.png"))) and not own & ours
    # Same config, same bytes.
    again = build_external_test(tmp_path / "again", 60, PhantomConfig(64, prevalence=prevalence))
    assert {digest(p) for p in (again / "frames").glob("*.png")} == ours


def experiment_args(croot, run_dir, *extra):
    args = ["experiment", "--croot", str(croot), "--subtype", SUBTYPE, "--image-size", "32"]
    args += ["--arch", "resnet18", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    args += ["--seeds", "0", "--n-bootstrap", "50", "--run-dir", str(run_dir)]
    return [*args, *extra]


def test_every_arm_is_scored_on_the_independent_set_with_paired_deltas(tmp_path):
    croot = build_toy_layout(tmp_path / "croot", SUBTYPE, size=32)
    external = build_toy_layout(
        tmp_path / "ext", SUBTYPE, {"test": (30, 10)}, size=32, seed=5, prefix="ext"
    )
    pool = build_toy_manifest(tmp_path / "filt", SUBTYPE, (0, 8), 32, 8, kept_fraction=0.7)
    run_dir = tmp_path / "exp"
    arms = ["--arms", "real", "dup_real", "synthetic_filtered", "--filtered-manifest", str(pool)]
    # First without the independent set: a finished run it is later asked for.
    assert classifier_main(experiment_args(croot, run_dir, *arms)) == 0
    best = run_dir / SUBTYPE / "real" / "seed_0" / "best" / "model.safetensors"
    trained_at = best.stat().st_mtime_ns
    before = json.loads((run_dir / SUBTYPE / "results.json").read_text())
    assert "external" not in before

    with_external = [*arms, "--external-croot", str(external), "--ratios", "0.5"]
    assert classifier_main(experiment_args(croot, run_dir, *with_external)) == 0
    assert best.stat().st_mtime_ns == trained_at  # scored with the selected model, not retrained
    results = json.loads((run_dir / SUBTYPE / "results.json").read_text())
    assert results["setup"]["external_counts"] == {"0": 30, "1": 10}
    for arm in ("real", "dup_real", "synthetic_filtered"):
        # The split's own test set is untouched by the second run.
        assert results["arms"][arm]["auc"] == before["arms"][arm]["auc"]
        row = results["external"][arm]
        assert row["auc_low"] <= row["auc"] <= row["auc_high"]
        folder = run_dir / SUBTYPE / arm / "seed_0"
        predictions = json.loads((folder / "predictions.json").read_text())["external"]
        metrics = json.loads((folder / "metrics.json").read_text())["external"]
        assert metrics["n_test"] == 40 and metrics["n_test_positive"] == 10
        expected = auc(np.array(predictions["labels"]), np.array(predictions["scores"]))
        assert row["auc"] == pytest.approx(expected) == pytest.approx(metrics["auc"])
    assert "delta_auc" not in results["external"]["real"]
    assert "dup_delta_auc" in results["external"]["synthetic_filtered"]
    for row in results["ratio_curve"]:  # the ratio curve is scored there too
        assert row["external_delta_low"] <= row["external_delta_auc"] <= row["external_delta_high"]
    report = (run_dir / SUBTYPE / "report.md").read_text()
    assert "independent test set (30 class 0 / 10 class 1" in report


def test_an_independent_set_that_shares_a_case_with_the_split_is_refused(tmp_path, capsys):
    croot = build_toy_layout(tmp_path / "croot", SUBTYPE, size=32)
    args = experiment_args(croot, tmp_path / "exp", "--arms", "real", "--synthetic-count", "0")
    assert classifier_main([*args, "--external-croot", str(croot)]) == 2
    error = capsys.readouterr().err
    assert "case-disjoint" in error and str(croot) in error
    assert not (tmp_path / "exp" / SUBTYPE / "real").exists()  # refused before any training


def test_the_pipeline_adds_the_set_on_the_phantom_only_and_keeps_the_dataset_stage(tmp_path):
    from scripts.pipeline.config import load_config
    from scripts.pipeline.stages import Layout, data_stages, external_test_stage

    layout = Layout(tmp_path / "run")
    without = load_config("toy", overrides={"data": {"external_test_frames": 0}})
    with_set = load_config("toy", overrides={"data": {"external_test_frames": 500}})
    assert external_test_stage(without, layout) is None
    stage = external_test_stage(with_set, layout)
    command = stage.commands[0]
    assert command[command.index("--n-images") + 1] == "500"
    assert command[command.index("--seed") + 1] == str(with_set.data.seed + 10_000)
    # Asking for the set does not change the data stage's key (no second import).
    assert data_stages(without, layout)[0].config == data_stages(with_set, layout)[0].config
    ddti_root = tmp_path / "ddti"  # the config only checks that the folder exists
    ddti_root.mkdir()
    ddti = load_config(
        "toy",
        overrides={
            "data": {"source": "ddti", "ddti_root": str(ddti_root), "external_test_frames": 500}
        },
    )
    assert external_test_stage(ddti, layout) is None  # the phantom alone can render new cases
