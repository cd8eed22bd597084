"""Classifier training: model selection never reads test labels, exact resume, and the
experiment CLI end to end (tiny resnet18 at 32 px, 1–3 epochs)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import classifier.train as train_module
from classifier.cli import main
from classifier.config import DataConfig, EvalConfig, ExperimentConfig, ModelConfig, TrainConfig
from classifier.experiment import run_experiment
from classifier.layout import read_layout
from classifier.toydata import build_toy_layout, build_toy_manifest
from classifier.train import train_classifier

SUBTYPE = "FTC"
TINY = TrainConfig(epochs=2, batch_size=16, patience=5, progress=False, lr=1e-3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared CPU they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def croot(tmp_path_factory):
    return build_toy_layout(tmp_path_factory.mktemp("croot"), SUBTYPE, size=32)


def _weights(folder):
    return load_file(str(folder / "best" / "model.safetensors"))


def crash_after_first_epoch(monkeypatch, train, valid, run_dir, model, config, data) -> None:
    """Train until the first epoch's state is saved, then stop as a killed process would."""
    original = train_module._save_state

    def save_then_stop(accelerator, folder, state):
        original(accelerator, folder, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(train, valid, run_dir, model, config, data)
    monkeypatch.setattr(train_module, "_save_state", original)


def test_model_selection_ignores_test_labels(tmp_path, croot):
    """Swapping test/0 and test/1 (poisoned labels) must not change the selected checkpoint,
    only the test metrics; a selection that peeked at test labels would pick differently."""
    poisoned = tmp_path / "poisoned"
    shutil.copytree(croot, poisoned)
    test_dir = poisoned / SUBTYPE / "test"
    (test_dir / "0").rename(test_dir / "tmp")
    (test_dir / "1").rename(test_dir / "0")
    (test_dir / "tmp").rename(test_dir / "1")
    results = {}
    for name, root in (("clean", croot), ("poisoned", poisoned)):
        config = ExperimentConfig(
            data=DataConfig(str(root), SUBTYPE, 32, channels_last=False),
            model=ModelConfig("resnet18"),
            train=TINY,
            eval=EvalConfig(n_bootstrap=50),
            arms=("real",),
            seeds=(0,),
            run_dir=str(tmp_path / name),
        )
        results[name] = run_experiment(config)["runs"]["real"][0]
    clean = _weights(tmp_path / "clean" / SUBTYPE / "real" / "seed_0")
    dirty = _weights(tmp_path / "poisoned" / SUBTYPE / "real" / "seed_0")
    assert results["clean"]["best_epoch"] == results["poisoned"]["best_epoch"]
    assert results["clean"]["threshold"] == results["poisoned"]["threshold"]
    assert all(torch.equal(clean[k], dirty[k]) for k in clean)
    # the poisoning is visible where it should be: on the test metrics only
    assert results["poisoned"]["auc"] == pytest.approx(1 - results["clean"]["auc"])


def test_training_needs_no_test_split(tmp_path, croot):
    no_test = tmp_path / "no_test"
    shutil.copytree(croot, no_test)
    shutil.rmtree(no_test / SUBTYPE / "test")
    args = ["train", "--croot", str(no_test), "--subtype", SUBTYPE, "--image-size", "32"]
    args += ["--arch", "resnet18", "--epochs", "1", "--batch-size", "8", "--no-progress"]
    code = main([*args, "--run-dir", str(tmp_path / "run")])
    assert code == 0 and (tmp_path / "run" / "best" / "model.safetensors").is_file()


def record_final_weights(monkeypatch) -> dict[str, dict[str, torch.Tensor]]:
    """The last epoch's weights per run folder, taken as training finishes (a finished run's
    checkpoint keeps none of them)."""
    captured = {}
    original = train_module._save_state

    def save_and_record(parts, folder, state):
        if state.finished:
            model = parts.accelerator.unwrap_model(parts.model)
            captured[str(folder)] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        original(parts, folder, state)

    monkeypatch.setattr(train_module, "_save_state", save_and_record)
    return captured


def test_resume_is_exact(tmp_path, croot, monkeypatch):
    layout = read_layout(croot, SUBTYPE, ("train", "valid"))
    data = DataConfig(str(croot), SUBTYPE, 32)
    model = ModelConfig("resnet18")
    config = TrainConfig(**{**TINY.__dict__, "epochs": 2, "augmentation": "strong"})
    final = record_final_weights(monkeypatch)
    straight = train_classifier(
        layout["train"], layout["valid"], tmp_path / "a", model, config, data
    )

    crash_after_first_epoch(
        monkeypatch, layout["train"], layout["valid"], tmp_path / "b", model, config, data
    )
    resumed = train_classifier(
        layout["train"], layout["valid"], tmp_path / "b", model, config, data
    )
    assert len(resumed.history) == 2
    assert resumed.history == straight.history
    final_a, final_b = final[str(tmp_path / "a")], final[str(tmp_path / "b")]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_a_finished_run_keeps_its_history_and_no_resume_weights(tmp_path, croot, monkeypatch):
    """Per arm and seed the resume weights are 3x the model (ResNet50 + AdamW: ~300 MB); once
    training has finished nothing reads them, and a second call trains nothing."""
    layout = read_layout(croot, SUBTYPE, ("train", "valid"))
    data = DataConfig(str(croot), SUBTYPE, 32)
    model, config = ModelConfig("resnet18"), TrainConfig(**{**TINY.__dict__, "epochs": 1})
    first = train_classifier(layout["train"], layout["valid"], tmp_path, model, config, data)
    checkpoint = tmp_path / train_module.STATE_DIR
    assert [path.name for path in checkpoint.iterdir()] == [train_module.STATE_FILE]
    assert (tmp_path / "best" / "model.safetensors").is_file()

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run trained again")

    monkeypatch.setattr(train_module, "train_epoch", must_not_train)
    again = train_classifier(layout["train"], layout["valid"], tmp_path, model, config, data)
    assert again.finished and again.history == first.history


def test_selection_and_early_stopping_start_at_min_epochs(tmp_path, croot, monkeypatch):
    """A falling validation AUC (0.9, 0.8, 0.7) makes epoch 1 the best and, with patience 1,
    stops at epoch 2; with min_epochs 3 neither selection nor patience counts before epoch 3."""
    layout = read_layout(croot, SUBTYPE, ("train", "valid"))
    data, model = DataConfig(str(croot), SUBTYPE, 32), ModelConfig("resnet18")
    states = {}
    for floor in (1, 3):
        falling = iter([0.9, 0.8, 0.7])
        monkeypatch.setattr(train_module, "auc", lambda labels, scores, vals=falling: next(vals))
        config = TrainConfig(**{**TINY.__dict__, "epochs": 3, "patience": 1, "min_epochs": floor})
        states[floor] = train_classifier(
            layout["train"], layout["valid"], tmp_path / str(floor), model, config, data
        )
    assert (states[1].best_epoch, states[1].epoch) == (1, 2)
    assert (states[3].best_epoch, states[3].epoch, states[3].best_val_auc) == (3, 3, 0.7)
    saved = json.loads((tmp_path / "3" / "best" / "config.json").read_text())
    assert saved["epoch"] == 3


def test_experiment_cli_report_and_matched_arms(tmp_path, croot):
    unfiltered = build_toy_manifest(tmp_path / "gen", SUBTYPE, (0, 6), size=32, seed=7)
    filtered = build_toy_manifest(tmp_path / "filt", SUBTYPE, (0, 8), 32, 8, kept_fraction=0.7)
    run_dir = tmp_path / "exp"
    args = ["experiment", "--croot", str(croot), "--subtype", SUBTYPE, "--image-size", "32"]
    args += ["--arch", "resnet18", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    args += ["--seeds", "1", "--n-bootstrap", "50", "--run-dir", str(run_dir)]
    args += ["--arms", "real", "dup_real", "synthetic", "synthetic_filtered"]
    args += ["--unfiltered-manifest", str(unfiltered), "--filtered-manifest", str(filtered)]
    code = main(args)
    assert code == 0
    root = run_dir / SUBTYPE
    results = json.loads((root / "results.json").read_text())
    assert set(results["arms"]) == {"real", "dup_real", "synthetic", "synthetic_filtered"}
    assert "delta_auc" not in results["arms"]["real"]
    for arm, row in results["arms"].items():
        assert row["auc_low"] <= row["auc"] <= row["auc_high"] and row["n_seeds"] == 1
        if arm != "real":
            assert row["delta_low"] <= row["delta_auc"] <= row["delta_high"]
    added = {
        arm: {
            k: v
            for k, v in json.loads((root / arm / "seed_1" / "composition.json").read_text()).items()
            if not k.startswith("real")
        }
        for arm in ("dup_real", "synthetic", "synthetic_filtered")
    }
    count = results["setup"]["extra_per_class"]["1"]
    assert added == {
        "dup_real": {"duplicate_1": count},
        "synthetic": {"synthetic_1": count},
        "synthetic_filtered": {"synthetic_1": count},
    }
    report = (root / "report.md").read_text()
    assert "3 real + duplicated real (count-matched)" in report and "95% CI" in report
    assert (root / "report.html").is_file() and (root / "figures" / "roc_arms.png").is_file()
    for arm in results["arms"]:
        assert f"figures/roc_{arm}.png" in report


def test_new_arms_compose_their_training_sets_and_pretrain_then_fine_tune_on_real(tmp_path, croot):
    """mixup trains on real only; filter_clip_only and coarse_only add as many images as the
    other synthetic arms; synthetic_pretrain's second phase sees real images only; every arm
    is paired against real and against duplicated real."""
    filtered = build_toy_manifest(tmp_path / "filt", SUBTYPE, (0, 8), 32, 8, kept_fraction=0.7)
    clip_only = build_toy_manifest(tmp_path / "clip", SUBTYPE, (0, 8), 32, 9, kept_fraction=0.9)
    coarse = build_toy_manifest(tmp_path / "coarse", SUBTYPE, (0, 8), 32, 10, kept_fraction=0.8)
    run_dir = tmp_path / "exp"
    args = ["experiment", "--croot", str(croot), "--subtype", SUBTYPE, "--image-size", "32"]
    args += ["--arch", "resnet18", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    args += ["--seeds", "1", "--n-bootstrap", "50", "--run-dir", str(run_dir), "--arms"]
    args += ["real", "dup_real", "synthetic_filtered", "mixup", "filter_clip_only"]
    args += ["coarse_only", "synthetic_pretrain", "--filtered-manifest", str(filtered)]
    args += ["--clip-only-manifest", str(clip_only), "--coarse-only-manifest", str(coarse)]
    assert main(args) == 0
    root = run_dir / SUBTYPE
    results = json.loads((root / "results.json").read_text())
    count = results["setup"]["extra_per_class"]["1"]

    def composition(*parts):
        return json.loads(root.joinpath(*parts, "composition.json").read_text())

    real_only = composition("real", "seed_1")
    assert composition("mixup", "seed_1") == real_only
    for arm in ("synthetic_filtered", "filter_clip_only", "coarse_only"):
        assert composition(arm, "seed_1") == {**real_only, "synthetic_1": count}
    assert composition("synthetic_pretrain", "seed_1", "pretrain") == {
        **real_only,
        "synthetic_1": count,
    }
    assert composition("synthetic_pretrain", "seed_1") == real_only  # fine-tuned on real only
    assert (root / "synthetic_pretrain" / "seed_1" / "pretrain" / "best").is_dir()
    for arm, row in results["arms"].items():
        assert ("delta_auc" in row) == (arm != "real")
        assert ("dup_delta_auc" in row) == (arm not in ("real", "dup_real"))


def test_mixup_blends_each_image_with_a_partner_reproducibly():
    from classifier.train import _step_generator, mixup

    batch = torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).reshape(4, 3, 2, 2)
    targets = torch.tensor([0.0, 1.0, 0.0, 1.0])
    config = TrainConfig(mixup_alpha=0.4, seed=3)
    mixed, partner, share = mixup(batch, targets, config, 2, 5, _step_generator(3, 2, 5))
    again, partner_again, share_again = mixup(
        batch, targets, config, 2, 5, _step_generator(3, 2, 5)
    )
    assert (
        torch.equal(mixed, again) and torch.equal(partner, partner_again) and share == share_again
    )
    assert 0.0 < share < 1.0 and not torch.equal(mixed, batch)
    order = [
        int(((mixed[i] - share * batch[i]) / (1 - share)).flatten()[0].round()) // 12
        for i in range(4)
    ]
    assert sorted(order) == [0, 1, 2, 3]  # a permutation of the batch
    assert torch.equal(partner, targets[order])


def test_ratio_curve_runs_both_arms_at_each_ratio_with_growing_counts(tmp_path, croot):
    filtered = build_toy_manifest(tmp_path / "filt", SUBTYPE, (0, 30), 32, 8, kept_fraction=0.9)
    run_dir = tmp_path / "exp"
    args = ["experiment", "--croot", str(croot), "--subtype", SUBTYPE, "--image-size", "32"]
    args += ["--arch", "resnet18", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    args += ["--seeds", "1", "--n-bootstrap", "50", "--run-dir", str(run_dir), "--arms"]
    args += ["real", "dup_real", "synthetic_filtered", "--filtered-manifest", str(filtered)]
    args += ["--ratios", "0.5", "1", "2"]
    assert main(args) == 0
    root = run_dir / SUBTYPE
    results = json.loads((root / "results.json").read_text())
    curve = results["ratio_curve"]
    assert [(row["ratio"], row["arm"]) for row in curve] == [
        (0.5, "dup_real"),
        (0.5, "synthetic_filtered"),
        (1.0, "dup_real"),
        (1.0, "synthetic_filtered"),
        (2.0, "dup_real"),
        (2.0, "synthetic_filtered"),
    ]
    low, high = curve[1]["count"]["1"], curve[5]["count"]["1"]
    assert 0 < low < high and curve[5]["ratio_reached"]["1"] > curve[1]["ratio_reached"]["1"]
    # Ratio 1 adds what the main arms add: their runs are reused, not trained again.
    assert curve[3]["count"]["1"] == results["setup"]["extra_per_class"]["1"]
    assert [row["runs"] for row in curve[2:4]] == ["dup_real", "synthetic_filtered"]
    assert not (root / "ratio_1").exists() and (root / "ratio_2/dup_real/seed_1").is_dir()
    for row in curve[2:4]:
        assert row["auc"] == results["arms"][row["arm"]]["auc"]
        assert row["delta_auc"] == results["arms"][row["arm"]]["delta_auc"]
    added = json.loads((root / "ratio_2/synthetic_filtered/seed_1/composition.json").read_text())
    assert added["synthetic_1"] == high
    assert all(row["delta_low"] <= row["delta_auc"] <= row["delta_high"] for row in curve)
    assert (root / "figures" / "ratio_curve.png").is_file()


def test_a_ratio_curve_without_its_arms_is_refused_before_any_training(tmp_path, croot):
    run_dir = tmp_path / "exp"
    args = ["experiment", "--croot", str(croot), "--subtype", SUBTYPE, "--image-size", "32"]
    args += ["--arch", "resnet18", "--epochs", "1", "--no-progress", "--seeds", "0"]
    args += ["--run-dir", str(run_dir), "--arms", "real", "dup_real", "--synthetic-count", "4"]
    assert main([*args, "--ratios", "1", "2"]) == 2
    assert not (run_dir / SUBTYPE / "real").exists()


def test_auto_precision_keeps_fp32_on_a_cpu_and_bf16_is_opt_in(monkeypatch):
    """CPU bf16 scored lower on the independent test set (module note), so "auto" never picks it
    there, even on a CPU with native bf16; asked for, it brings channels_last with it."""
    from classifier import precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert precision.cpu_has_native_bf16() is native
        assert precision.resolve_mixed_precision("auto") == "no"
        assert precision.resolve_mixed_precision("bf16") == "bf16"
    assert precision.resolve_channels_last(None, "cpu", "no") is False
    assert precision.resolve_channels_last(None, "cpu", "bf16") is True
    assert precision.resolve_channels_last(False, "cuda", "bf16") is False
    assert precision.accelerate_precision("bf16", cuda=False) == "no"
    assert precision.accelerate_precision("bf16", cuda=True) == "bf16"


def test_resume_in_another_precision_is_refused(tmp_path, croot, monkeypatch):
    layout = read_layout(croot, SUBTYPE, ("train", "valid"))
    data = DataConfig(str(croot), SUBTYPE, 32)
    model = ModelConfig("resnet18")
    fp32 = TrainConfig(**{**TINY.__dict__, "epochs": 2, "mixed_precision": "no"})
    crash_after_first_epoch(
        monkeypatch, layout["train"], layout["valid"], tmp_path / "run", model, fp32, data
    )
    bf16 = TrainConfig(**{**fp32.__dict__, "mixed_precision": "bf16"})
    with pytest.raises(ValueError, match="mixed precision 'no'"):
        train_classifier(layout["train"], layout["valid"], tmp_path / "run", model, bf16, data)
    resumed = train_classifier(
        layout["train"], layout["valid"], tmp_path / "run", model, fp32, data
    )
    assert len(resumed.history) == 2 and resumed.mixed_precision == "no"
