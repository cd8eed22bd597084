"""Classifier data: layout reading, the synthetic-only-in-train rule, count-matched controls,
manifests, safe weight loading and augmentation."""

import json
import pickle
import shutil

import pytest
import torch

from classifier.augment import augment
from classifier.config import DataConfig, EvalConfig, ExperimentConfig, MixConfig
from classifier.experiment import arm_training_set, extra_counts, load_pools
from classifier.layout import (
    ImageItem,
    LayoutError,
    SyntheticLeakError,
    assert_real_only,
    class_counts,
    read_layout,
)
from classifier.mixing import add_to_train, duplicate_real, matched_counts, read_manifest
from classifier.models import WeightsError, build_model
from classifier.toydata import build_toy_layout, build_toy_manifest

SUBTYPE = "FTC"


@pytest.fixture(scope="module")
def croot(tmp_path_factory):
    return build_toy_layout(tmp_path_factory.mktemp("croot"), SUBTYPE, size=24)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    unfiltered = build_toy_manifest(folder / "gen", SUBTYPE, (5, 12), size=24, seed=5)
    filtered = build_toy_manifest(folder / "filt", SUBTYPE, (5, 14), 24, 6, kept_fraction=0.5)
    return unfiltered, filtered


def test_read_layout_counts_and_cases(croot):
    layout = read_layout(croot, SUBTYPE)
    assert {s: class_counts(items) for s, items in layout.items()} == {
        "train": {0: 24, 1: 8},
        "valid": {0: 8, 1: 4},
        "test": {0: 8, 1: 4},
    }
    assert all(item.origin == "real" and item.case_id for item in layout["test"])


def test_layout_errors_name_the_path(tmp_path, croot):
    copy = tmp_path / "c"
    shutil.copytree(croot, copy)
    with pytest.raises(LayoutError, match="no such subtype"):
        read_layout(copy, "MTC")
    shutil.rmtree(copy / SUBTYPE / "valid" / "1")
    with pytest.raises(LayoutError, match=r"valid/1: missing class folder"):
        read_layout(copy, SUBTYPE)


def test_case_in_two_splits_is_refused(tmp_path, croot):
    copy = tmp_path / "c"
    shutil.copytree(croot, copy)
    splits = json.loads((copy / "splits.json").read_text())
    entries = splits[SUBTYPE]
    test_entry = next(e for e in entries if e["split"] == "test")
    train_entry = next(e for e in entries if e["split"] == "train")
    test_entry["case_id"] = train_entry["case_id"]
    (copy / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(LayoutError, match="appears in both"):
        read_layout(copy, SUBTYPE)


def test_synthetic_never_enters_valid_or_test(croot, manifests):
    layout = read_layout(croot, SUBTYPE)
    synthetic = read_manifest(manifests[0], SUBTYPE)
    with pytest.raises(SyntheticLeakError, match="valid"):
        add_to_train(layout["valid"], synthetic, split="valid")
    with pytest.raises(SyntheticLeakError, match="test"):
        add_to_train(layout["test"], synthetic, split="test")
    with pytest.raises(SyntheticLeakError):
        assert_real_only(layout["test"] + synthetic[:1], "test")
    with pytest.raises(SyntheticLeakError):
        assert_real_only(layout["valid"] + synthetic[:1], "valid")
    # a "synthetic" image marked for another split cannot be smuggled into train either
    smuggled = ImageItem(synthetic[0].path, 1, "test", "synthetic")
    with pytest.raises(SyntheticLeakError):
        add_to_train(layout["train"], [smuggled])
    assert len(add_to_train(layout["train"], synthetic)) == 32 + len(synthetic)


def test_manifest_pointing_at_real_test_images_is_refused(tmp_path, croot):
    test_image = next((croot / SUBTYPE / "test" / "1").iterdir())
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"file_name": str(test_image), "label": SUBTYPE}) + "\n")
    with pytest.raises(SyntheticLeakError, match="valid/test folder"):
        read_manifest(manifest, SUBTYPE, croot=croot)


def test_exporter_marked_synthetic_in_test_is_refused(tmp_path, croot):
    copy = tmp_path / "c"
    shutil.copytree(croot, copy)
    name = next((copy / SUBTYPE / "test" / "0").iterdir()).name
    (copy / "splits.json").write_text(
        json.dumps({"assignments": {name: {"case_id": "x", "split": "test", "synthetic": True}}})
    )
    with pytest.raises(SyntheticLeakError, match="synthetic image in test/"):
        read_layout(copy, SUBTYPE)
    # The guard every consumer of valid/test calls refuses such an item as well.
    item = ImageItem(copy / SUBTYPE / "test" / "0" / name, 0, "test", "synthetic")
    with pytest.raises(SyntheticLeakError, match="synthetic image refused in test"):
        assert_real_only([item], "test")


def test_manifest_labels_kept_and_errors(tmp_path, manifests):
    unfiltered, filtered = manifests
    items = read_manifest(unfiltered, SUBTYPE)
    assert class_counts(items) == {0: 5, 1: 12}
    assert all(item.split == "train" and item.synthetic for item in items)
    rows = [json.loads(line) for line in filtered.read_text().splitlines()]
    kept = read_manifest(filtered, SUBTYPE, require_kept=True)
    assert len(kept) == sum(row["kept"] for row in rows) < len(rows)
    # for the MTC task the FTC rows belong to no class and are skipped; benign rows stay
    assert class_counts(read_manifest(unfiltered, "MTC")) == {0: 5, 1: 0}
    with pytest.raises(LayoutError, match=r"manifest.jsonl:1: filtered manifest row has no 'kept'"):
        read_manifest(unfiltered, SUBTYPE, require_kept=True)
    broken = tmp_path / "manifest.jsonl"
    broken.write_text('{"file_name": "nope.png", "label": "FTC"}\n')
    with pytest.raises(LayoutError, match=r"manifest.jsonl:1: image .*nope.png does not exist"):
        read_manifest(broken, SUBTYPE)


def test_duplicate_control_is_count_matched_per_class(croot, manifests):
    layout = read_layout(croot, SUBTYPE)
    config = ExperimentConfig(
        data=DataConfig(str(croot), SUBTYPE, 24),
        mix=MixConfig(str(manifests[0]), str(manifests[1]), ratio=2.0, classes=(0, 1)),
        eval=EvalConfig(n_bootstrap=10),
    )
    pools = load_pools(config)
    counts = extra_counts(config, layout["train"], pools)
    kept_positive = class_counts(pools["synthetic_filtered"])[1]
    # class 1: ratio 2 -> 16 wanted, capped by the smaller pool; class 0 capped at 5 by unfiltered
    assert counts[1] == min(16, 12, kept_positive)
    assert counts[0] == min(48, 5, class_counts(pools["synthetic_filtered"])[0])
    added = {}
    for arm in ("dup_real", "synthetic", "synthetic_filtered"):
        items, policy = arm_training_set(arm, layout["train"], pools, counts, seed=3)
        extra = [item for item in items if item.origin != "real"]
        added[arm] = class_counts(extra)
        assert policy == "standard"
    assert added["dup_real"] == added["synthetic"] == added["synthetic_filtered"] == counts
    items, policy = arm_training_set("classic_aug", layout["train"], pools, counts, seed=3)
    assert len(items) == len(layout["train"]) and policy == "strong"


def test_duplicates_cycle_evenly_beyond_class_size(croot):
    train = read_layout(croot, SUBTYPE, ("train",))["train"]
    copies = duplicate_real(train, {0: 0, 1: 20}, seed=0)  # 8 positives -> each 2 or 3 times
    assert len(copies) == 20 and all(c.origin == "duplicate" and c.label == 1 for c in copies)
    times = {path: sum(c.path == path for c in copies) for path in {c.path for c in copies}}
    assert len(times) == 8 and set(times.values()) <= {2, 3}


def test_matched_counts_by_absolute_count(croot, manifests):
    train = read_layout(croot, SUBTYPE, ("train",))["train"]
    pool = read_manifest(manifests[0], SUBTYPE)
    assert matched_counts(train, [pool], (1,), 1.0, per_class_count=3) == {0: 0, 1: 3}


def test_weights_load_torchvision_and_timm_names_safely(tmp_path):
    from safetensors.torch import save_file

    source = build_model("resnet18")
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)  # an ImageNet head: must be dropped, not fail
    state["fc.bias"] = torch.zeros(1000)
    save_file(state, str(tmp_path / "tv.safetensors"))
    loaded = build_model("resnet18", tmp_path / "tv.safetensors")
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)
    timm_style = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(timm_style, tmp_path / "timm.pth")
    assert torch.equal(
        build_model("resnet18", tmp_path / "timm.pth").layer4[1].bn2.weight,
        source.layer4[1].bn2.weight,
    )
    with pytest.raises(WeightsError, match="does not fit resnet50"):
        build_model("resnet50", tmp_path / "tv.safetensors")

    class Exploit:
        def __reduce__(self):
            return (print, ("pickle code executed",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"conv1.weight": Exploit()}))
    with pytest.raises(WeightsError, match=r"evil\.pt: not a plain tensor state dict"):
        build_model("resnet18", tmp_path / "evil.pt")


def test_augmentation_is_seeded_and_keeps_shape():
    batch = torch.rand(4, 3, 24, 24)
    for policy in ("standard", "strong"):
        first = augment(batch.clone(), policy, torch.Generator().manual_seed(1))
        again = augment(batch.clone(), policy, torch.Generator().manual_seed(1))
        other = augment(batch.clone(), policy, torch.Generator().manual_seed(2))
        assert first.shape == batch.shape and torch.equal(first, again)
        assert not torch.equal(first, other) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(augment(batch, "none", torch.Generator()), batch)


def test_experiment_config_round_trip_and_unknown_keys(tmp_path):
    from dataclasses import asdict

    from classifier.config import load_experiment_config

    config = ExperimentConfig(data=DataConfig("c", "MTC", 64), seeds=(4, 5), arms=("real",))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(asdict(config)))
    assert load_experiment_config(path) == config
    path.write_text(json.dumps({"train": {"epochz": 3}}))
    with pytest.raises(ValueError, match=r"config\.json: TrainConfig: unknown key"):
        load_experiment_config(path)


def test_synthetic_png_copied_into_test_is_refused(tmp_path, manifests):
    """Where a file lies is not enough: a PNG whose provenance chunk says synthetic is refused
    in valid/test even when splits.json does not know it."""
    from PIL import Image

    from generation.inference.provenance import save_with_provenance

    croot = build_toy_layout(tmp_path / "croot", SUBTYPE, size=24)
    synthetic_png = next((manifests[0].parent / "images").glob("*.png"))
    with Image.open(synthetic_png) as image:
        save_with_provenance(
            croot / SUBTYPE / "test" / "0" / "smuggled.png", image.copy(), {"id": "x"}
        )
    read_layout(croot, SUBTYPE, ("train",))  # train alone is unaffected
    with pytest.raises(SyntheticLeakError, match=r"smuggled\.png.*synthetic image in test/"):
        read_layout(croot, SUBTYPE)


@pytest.mark.parametrize(
    "derived",
    [
        {"case_id": "img_test_1_000"},
        {"case_id": "img_train_1_000", "source_cases": ["img_train_1_000", "img_valid_0_002"]},
        {"reference": "/elsewhere/init_image/img_test_0_001.png"},
    ],
)
def test_synthetic_row_from_a_held_out_case_is_refused(tmp_path, croot, derived):
    image = tmp_path / "images" / "syn.png"
    image.parent.mkdir()
    shutil.copy(next((croot / SUBTYPE / "train" / "1").iterdir()), image)
    row = {"id": "div-FTC-000007", "file_name": "images/syn.png", "label": SUBTYPE, **derived}
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps(row) + "\n")
    with pytest.raises(SyntheticLeakError, match="div-FTC-000007"):
        read_manifest(manifest, SUBTYPE, croot=croot)
    clean = {**row, "case_id": "img_train_1_000", "source_cases": [], "reference": ""}
    manifest.write_text(json.dumps(clean) + "\n")
    assert len(read_manifest(manifest, SUBTYPE, croot=croot)) == 1


def test_matched_synthetic_share_makes_a_generated_look_carry_no_label():
    """Natural shares: half the positives but a tenth of the negatives are generated, so
    "generated" predicts "positive"; matched: both classes draw generated images half the time."""
    from classifier.data import EpochSampler, balanced_weights

    labels = torch.tensor([1.0] * 4 + [0.0] * 10)
    synthetic = torch.tensor([True, True, False, False, True] + [False] * 9)

    def mass(weights, in_class, generated):
        members = (labels > 0.5) == in_class
        return weights[members & (synthetic == generated)].sum().item()

    natural = balanced_weights(labels)
    assert mass(natural, True, True) == pytest.approx(0.25)
    assert mass(natural, False, True) == pytest.approx(0.05)
    matched = balanced_weights(labels, synthetic)
    for in_class in (True, False):
        assert mass(matched, in_class, True) == pytest.approx(0.25)
        assert mass(matched, in_class, False) == pytest.approx(0.25)
    draws = torch.tensor(list(EpochSampler(20_000, 0, matched)))
    drawn = synthetic[draws]
    assert labels[draws][drawn].mean().item() == pytest.approx(0.5, abs=0.02)
    # Generated images in one class only cannot be matched: the plain class balance stays.
    only_positive = synthetic & (labels > 0.5)
    assert torch.equal(balanced_weights(labels, only_positive), natural)


def test_matched_share_needs_the_weighted_sampler():
    from accelerate import Accelerator

    from classifier.config import ModelConfig, TrainConfig
    from classifier.data import CachedImages, ImageCache
    from classifier.train import build_training

    with pytest.raises(ValueError, match="weighted_sampler"):
        build_training(
            CachedImages([], ImageCache(32)),
            ModelConfig(arch="resnet18"),
            TrainConfig(synthetic_share="matched", imbalance="weighted_loss"),
            DataConfig(image_size=32),
            Accelerator(cpu=True),
        )
