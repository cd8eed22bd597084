"""Bring your own data: a non-thyroid label set in the class-folder layout, several lesions per
frame, lesion-free frames, a cross-label duplicate and a lesion too small for the working size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier.config import ALL_ARMS, EXTRA_ARMS
from metadata.builder import DUPLICATES_REPORT, DuplicateConflictError
from metadata.classifier_export import export_classifier_layout
from metadata.importers.folders import import_folders
from metadata.importers.generic import import_generic
from metadata.importers.tiger import import_tiger_folder
from metadata.labelset import LABELS_FILE, LabelSet, load_labelset_file
from metadata.records import read_metadata, resolve
from metadata.splits import SplitConfig
from metadata.subset import write_split_subset
from metadata.validate import read_dataset
from metadata.vocabulary import NoduleAttributes, compose_text_nd
from scripts.pipeline.config import load_config
from scripts.pipeline.preflight import PreflightError, run_preflight
from scripts.pipeline.stages import Layout

BREAST = {"benign": "benign", "PTC": "malignant", "FTC": "malignant", "MTC": "malignant"}
TINY = "benign (4)"  # its mask is one pixel: gone at 64 px
DUPLICATE = "malignant (900)"  # a copy of "benign (1)" filed as malignant
TWO_LESIONS = ("malignant (1)", "malignant (2)")


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/{benign,malignant,normal}/NAME.png + NAME_mask.png (+ NAME_mask_1.png), from a
    128 px phantom: its subtypes become "malignant", tissue maps become normal frames."""
    from metadata.importers.phantom import build_phantom_dataset
    from metadata.phantom import PhantomConfig

    base = tmp_path_factory.mktemp("own")
    phantom = base / "phantom"
    config = PhantomConfig(size=128, seed=4, prevalence={"benign": 0.5, "FTC": 0.25, "MTC": 0.25})
    build_phantom_dataset(phantom, n_images=56, config=config)
    meta = phantom / "init_image" / "metadata.jsonl"
    root = base / "busi"
    counters = {"benign": 0, "malignant": 0, "normal": 0}
    for record in read_metadata(meta):
        if record.attributes.get("frame") != 1:
            continue  # one frame per case: the layout names no patients
        label = BREAST[record.label]
        counters[label] += 1
        name = f"{label} ({counters[label]})"
        image = np.asarray(Image.open(resolve(meta, record.file_name)).convert("L"))
        mask = np.asarray(Image.open(resolve(meta, record.condition_FG)).convert("L"))
        if name == TINY:
            mask = np.zeros_like(mask)
            mask[100, 100] = 255
        save(root / label / f"{name}.png", image)
        save(root / label / f"{name}_mask.png", mask)
        if name in TWO_LESIONS:
            second = np.zeros_like(mask)
            second[110:118, 4:12] = 255  # a second, separate lesion at the edge
            save(root / label / f"{name}_mask_1.png", second)
        if counters["normal"] < 6:
            counters["normal"] += 1
            tissue = np.asarray(Image.open(resolve(meta, record.condition_BG)).convert("L"))
            normal = root / "normal" / f"normal ({counters['normal']})"
            save(normal.with_name(normal.name + ".png"), tissue)
            if counters["normal"] % 2:  # half with an empty mask file, half with none
                save(normal.with_name(normal.name + "_mask.png"), np.zeros_like(mask))
    shutil.copyfile(root / "benign" / "benign (1).png", root / "malignant" / f"{DUPLICATE}.png")
    shutil.copyfile(
        root / "benign" / "benign (1)_mask.png", root / "malignant" / f"{DUPLICATE}_mask.png"
    )
    return root


def import_options() -> dict:
    return {"negative": "benign", "lesion_free": "normal", "workers": 1}


def test_cross_label_duplicate_is_refused_with_the_file_names(class_folders, tmp_path):
    with pytest.raises(DuplicateConflictError) as error:
        import_folders(class_folders, tmp_path / "ds", **import_options())
    assert "benign_1.png" in str(error.value) and "malignant_900.png" in str(error.value)
    assert not (tmp_path / "ds").exists()  # nothing half-written


def test_folders_cli_refuses_the_conflict_then_drops_it_when_asked(class_folders, tmp_path, capsys):
    from metadata.cli import main as metadata_cli

    argv = ["folders", "--root", str(class_folders), "--negative", "benign"]
    argv += ["--lesion-free", "normal", "--workers", "1", "--out"]
    assert metadata_cli([*argv, str(tmp_path / "a")]) == 2
    assert "malignant_900.png" in capsys.readouterr().err
    assert metadata_cli([*argv, str(tmp_path / "b"), "--drop-conflicts"]) == 0
    assert (tmp_path / "b" / "init_image" / "metadata.jsonl").is_file()


@pytest.fixture(scope="module")
def own_dataset(class_folders, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("own_ds") / "dataset"
    import_folders(class_folders, out, drop_conflicts=True, **import_options())
    return out


def test_folders_import_brings_in_the_right_rows(class_folders, own_dataset):
    meta_file, records = read_dataset(own_dataset)  # every stage's checks pass
    by_name = {r.stem: r for r in records}
    frames = {p.stem for p in class_folders.rglob("*.png") if "_mask" not in p.stem}
    assert len(records) == len(frames) - 2  # the conflicting pair is left out
    assert "benign_1" not in by_name and "malignant_900" not in by_name
    report = json.loads((own_dataset / DUPLICATES_REPORT).read_text())
    dropped = report["dropped_conflicts"]
    assert len(dropped) == 1 and any("malignant_900.png" in f for f in dropped[0]["files"])
    assert (own_dataset / "duplicate_cases.png").is_file()

    labels = load_labelset_file(own_dataset / LABELS_FILE)
    assert labels.negative == "benign" and labels.positives == ("malignant",)
    assert labels.lesion_free == "normal"
    assert {r.label for r in records} == {"benign", "malignant", "normal"}

    normal = [r for r in records if r.label == "normal"]
    assert len(normal) == 6
    for record in normal:
        assert record.attributes["lesion_free"] is True and record.text_nd == "normal"
        fg = np.asarray(Image.open(resolve(meta_file, record.condition_FG)).convert("L"))
        assert not fg.any()

    for stem in ("malignant_1", "malignant_2"):
        record = by_name[stem]
        lesions = record.attributes["lesions"]
        assert len(lesions) == 2 and lesions[1]["bbox"] == [110, 4, 118, 12]
        fg = np.asarray(Image.open(resolve(meta_file, record.condition_FG)).convert("L")) > 127
        assert fg[110:118, 4:12].all() and fg.sum() > 64  # the union of both lesions
        assert record.text_nd.startswith("malignant, ")
    assert "lesions" not in by_name["malignant_3"].attributes


def test_export_uses_the_declared_classes_and_keeps_normal_frames_out_of_tasks(
    own_dataset, tmp_path
):
    splits = json.loads(
        export_classifier_layout(own_dataset, tmp_path / "cls", SplitConfig(0.2, 0.2)).read_text()
    )
    assert splits["tasks"] == ["malignant"] and splits["labels"]["negative"] == "benign"
    normal = [e for e in splits["assignments"].values() if e["label"] == "normal"]
    assert normal and all(e["tasks"] == [] for e in normal)
    assert not (tmp_path / "cls" / "normal").exists()
    assert {p.name for p in (tmp_path / "cls" / "malignant" / "train").iterdir()} == {"0", "1"}

    subset = write_split_subset(own_dataset, tmp_path / "cls" / "splits.json", tmp_path / "sub")
    kept = read_metadata(subset)
    train_normal = sum(1 for e in normal if e["split"] == "train")
    assert sum(r.label == "normal" for r in kept) == train_normal  # only train cases
    assert (tmp_path / "sub" / LABELS_FILE).is_file()


def test_preflight_names_the_tiny_lesion_before_training(own_dataset, tmp_path):
    config = load_config("toy", overrides={"run_dir": str(tmp_path / "run")})
    layout = Layout(tmp_path / "run")
    export_classifier_layout(own_dataset, layout.croot, SplitConfig(0.2, 0.2))
    write_split_subset(own_dataset, layout.splits, layout.train_only)
    shutil.copytree(own_dataset, layout.dataset)
    tiny = "benign_4.png"
    in_train = json.loads(layout.splits.read_text())["assignments"][tiny]["split"] == "train"
    assert in_train, "the fixture's tiny lesion must be a train case for this test"
    with pytest.raises(PreflightError, match=r"benign_4\.png \(at \[64\] px\)"):
        run_preflight(config, layout, ["malignant"])
    report = run_preflight(config, layout, ["malignant"], tiny_lesions="skip")
    assert "benign_4.png" in report.checks["vanishing_lesions"] and report.warnings
    assert json.loads((layout.root / "preflight.json").read_text())["warnings"]

    from generation.inference.masks import MaskBank
    from generation.inference.sources import load_train_source

    bank = MaskBank(load_train_source(layout.train_only), 64)
    names = {record.file_name for record in bank.records}
    assert tiny not in names and not any(n.startswith("normal") for n in names)


def test_preflight_refuses_a_task_without_test_cases(own_dataset, tmp_path):
    layout = Layout(tmp_path / "run")
    export_classifier_layout(own_dataset, layout.croot, SplitConfig(0.2, 0.0))
    write_split_subset(own_dataset, layout.splits, layout.train_only)
    shutil.copytree(own_dataset, layout.dataset)
    config = load_config("toy", overrides={"preflight": {"tiny_lesions": "skip"}})
    with pytest.raises(PreflightError, match="task malignant: 0 benign case"):
        run_preflight(config, layout, ["malignant"], "skip")


def test_generic_csv_takes_several_masks_a_label_set_and_refuses_escaping_paths(
    class_folders, tmp_path
):
    (tmp_path / "labels.json").write_text(
        json.dumps(
            {
                "negative": "benign",
                "positives": ["malignant"],
                "lesion_free": "normal",
                "words": {"malignant": "malignant, breast"},
                "attribute_words": {"orientation": ["parallel", "not parallel"]},
            }
        )
    )
    data = tmp_path / "data"
    shutil.copytree(class_folders, data)
    rows = [
        "image,mask,label,case_id,orientation",
        "benign/benign (3).png,benign/benign (3)_mask.png,benign,p1,parallel",
        "malignant/malignant (1).png,"
        "malignant/malignant (1)_mask.png;malignant/malignant (1)_mask_1.png,malignant,p2,",
        "normal/normal (2).png,,normal,p3,",
    ]
    (data / "list.csv").write_text("\n".join(rows) + "\n")
    meta = import_generic(data / "list.csv", tmp_path / "out", labels_file=tmp_path / "labels.json")
    records = {r.case_id: r for r in read_metadata(meta)}
    assert records["p1"].text_nd.endswith(", parallel")
    assert records["p2"].text_nd.startswith("malignant, breast, ")
    assert len(records["p2"].attributes["lesions"]) == 2
    assert records["p3"].attributes["lesion_free"] and records["p3"].text_nd == "normal"

    (data / "bad.csv").write_text("image,mask,label\n../outside.png,x.png,benign\n")
    with pytest.raises(ValueError, match="escapes"):
        import_generic(data / "bad.csv", tmp_path / "bad", labels_file=tmp_path / "labels.json")
    (data / "thyroid.csv").write_text("image,mask,label\nnormal/normal (2).png,,normal\n")
    with pytest.raises(ValueError, match="label 'normal' is not one of"):
        import_generic(data / "thyroid.csv", tmp_path / "thy")


def test_a_built_dataset_is_adopted_by_hard_links_not_imported_again(own_dataset, tmp_path):
    meta = import_tiger_folder(own_dataset, tmp_path / "copy")
    assert [r.to_json() for r in read_metadata(meta)] == [
        r.to_json() for r in read_metadata(own_dataset)
    ]
    first = read_metadata(meta)[0]
    original = own_dataset / "init_image" / first.file_name
    assert (
        tmp_path / "copy" / "init_image" / first.file_name
    ).stat().st_ino == original.stat().st_ino
    assert (tmp_path / "copy" / LABELS_FILE).is_file()


def test_label_set_rules():
    with pytest.raises(ValueError, match="not among positives"):
        LabelSet(negative="a", positives=("b",), rare=("c",))
    with pytest.raises(ValueError, match="both negative and positive"):
        LabelSet(negative="a", positives=("a",), rare=())
    thyroid = LabelSet.thyroid()
    assert compose_text_nd(NoduleAttributes(label="FTC", size="small")) == (
        "malignant, follicular, small"
    )
    assert thyroid.classes == ("benign", "PTC", "FTC", "MTC", "malignant")
    custom = LabelSet(negative="benign", positives=("malignant",), rare=(), lesion_free="normal")
    assert custom.classes == ("benign", "malignant", "normal") and custom.text_words("normal") == [
        "normal"
    ]


def test_toy_run_on_own_data_reports_the_declared_classes(own_dataset, tmp_path):
    from scripts.cli import main as tiger

    run_dir = tmp_path / "run"
    argv = ["run", "--profile", "toy", "--data", str(own_dataset), "--run-dir", str(run_dir)]
    arms = "classifier.arms=[" + ",".join(ALL_ARMS) + "]"  # every arm, the coarse model's too
    settings = ["preflight.tiny_lesions=skip", "generation.coarse_only=4", arms]
    assert tiger([*argv, "--set", *settings]) == 0
    results = json.loads((run_dir / "classifier" / "malignant" / "results.json").read_text())
    assert set(results["arms"]) == set(ALL_ARMS)
    assert all("dup_delta_auc" in results["arms"][arm] for arm in EXTRA_ARMS)
    coarse = [json.loads(line) for line in (run_dir / "generate" / "malignant" / "coarse_only"
              / "manifest.jsonl").read_text().splitlines()]  # fmt: skip
    assert len(coarse) == 4 and all(row["conditioning_scales"] == [0.0, 0.0] for row in coarse)
    main_manifest = (run_dir / "generate" / "malignant" / "manifest.jsonl").read_text()
    assert "coarse_only" not in main_manifest  # its own pool, never arm 4/5's
    quality = json.loads(
        (run_dir / "filter" / "malignant" / "quality" / "quality.json").read_text()
    )
    assert (
        "coarse_only" in quality["modes"] and "memorized_fraction" in quality["modes"]["diversify"]
    )
    report = (run_dir / "report" / "report.md").read_text()
    assert "### malignant vs benign" in report and "task (benign / positive class)" in report
    assert "9 pretrain on 5's set, fine-tune on real only" in report
    assert "## Synthetic-data quality" in report and "ΔAUC vs duplicated real" in report
    assert "Near-duplicates: " in report and "conflicting labels were left out" in report
    dataset = read_metadata(run_dir / "data" / "dataset")
    assert {r.label for r in dataset} == {"benign", "malignant", "normal"}
    preflight = json.loads((run_dir / "preflight.json").read_text())
    assert "benign_4.png" in preflight["checks"]["vanishing_lesions"]


def test_preflight_plans_memory_from_a_pretrained_folder_and_refuses_what_cannot_fit(
    tmp_path, monkeypatch
):
    """The plan is built on the meta device from the folder's configs (no weights read): the
    gpu profile on a width/8 SD 2.1 twin does not fit 1 GiB and fits 141 GiB."""
    from generation.twin import write_twin
    from scripts.pipeline import preflight

    folder = tmp_path / "sd21base-w8"
    write_twin("sd21base", folder, width_divisor=8)
    config = load_config("gpu", overrides={"pretrained_model_name_or_path": str(folder)})
    plans = {plan.stage: plan for plan in preflight.memory_plans(config, folder)}
    assert set(plans) == {"coarse", "fine"} and plans["coarse"].parts["optimizer"] > 0
    report = preflight.PreflightReport()
    monkeypatch.setattr(preflight, "training_device_capacity", lambda: ("cuda", 1.0 * 2**30))
    preflight.check_memory(config, report)
    assert any("coarse stage needs about" in problem for problem in report.problems)
    report = preflight.PreflightReport()
    monkeypatch.setattr(preflight, "training_device_capacity", lambda: ("cuda", 141.0 * 2**30))
    preflight.check_memory(config, report)
    assert not report.problems and report.checks["memory_plan_gib"]["coarse"] > 0
    report = preflight.PreflightReport()
    config.pretrained_model_name_or_path = str(tmp_path / "missing")
    preflight.check_memory(config, report)
    assert "no such folder" in report.problems[0]


def test_synthetic_rows_of_the_declared_negative_class_go_to_class_0(tmp_path):
    from classifier.mixing import manifest_label, negative_class

    (tmp_path / "splits.json").write_text(json.dumps({"labels": {"negative": "healthy"}}))
    negative = negative_class(tmp_path)
    assert negative == "healthy" and negative_class(tmp_path / "none") == "benign"
    assert manifest_label("healthy", "lesion", negative) == 0
    assert manifest_label("lesion", "lesion", negative) == 1
    assert manifest_label("benign", "lesion", negative) is None


def test_preflight_plans_the_gpu_profile_at_full_size_as_the_memory_benchmark_did(tmp_path):
    """SD 2.1-base's published configs alone (no weights): the preflight's plans for the gpu
    profile equal benchmarks/results/memory_plan.json's (coarse full 8-bit, fine 8-bit)."""
    import torch

    from generation.twin import build_twin_pipeline
    from scripts.pipeline import preflight

    with torch.device("meta"):
        twin = build_twin_pipeline("sd21base")
    folder = tmp_path / "sd21base-configs"
    twin.unet.save_config(folder / "unet")
    twin.vae.save_config(folder / "vae")
    twin.text_encoder.config.save_pretrained(folder / "text_encoder")
    config = load_config("gpu", overrides={"pretrained_model_name_or_path": str(folder)})
    plans = {plan.stage: plan.total / 2**30 for plan in preflight.memory_plans(config, folder)}
    results = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
    benchmark = json.loads((results / "memory_plan.json").read_text())
    expected = benchmark["gpu_512px_bf16"]
    assert plans["coarse"] == pytest.approx(
        expected["coarse full, adamw8bit, batch 2"]["total_gib"], abs=0.01
    )
    assert plans["fine"] == pytest.approx(
        expected["fine, adamw8bit, batch 2"]["total_gib"], abs=0.01
    )
