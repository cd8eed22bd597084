"""Generation stage: determinism, resume, provenance, train-only sources and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from generation.inference.attributes import AttributeConstraints, AttributeSpecError
from generation.inference.cli import main as cli_main
from generation.inference.engine import (
    GenerationEngine,
    GenerationError,
    SamplingConfig,
    process_share,
)
from generation.inference.masks import MaskBank, MaskBankConfig
from generation.inference.plan import plan_reference
from generation.inference.provenance import PROVENANCE_KEY, is_synthetic, read_provenance
from generation.inference.runner import GenerationRequest, run_generation
from generation.inference.sources import load_train_source
from metadata.records import MetadataError, read_metadata
from metadata.splits import SplitConfig, assign_records
from metadata.vocabulary import measure_mask

SMALL = dict(
    resolution=64,
    vae_block_out_channels=(16, 32, 32),
    vae_norm_num_groups=8,
    unet_block_out_channels=(32, 32, 64),
    unet_norm_num_groups=16,
    unet_attention_head_dim=16,
    text_hidden_size=64,
    text_num_layers=1,
    text_num_heads=2,
    text_intermediate_size=128,
)


@pytest.fixture(scope="module")
def fine_folder(tmp_path_factory) -> Path:
    """A stand-in fine folder: tiny random SD + fresh branches (the fine stage's own API)."""
    from generation.fine.pipeline import TigerFinePipeline
    from generation.models import TinyModelConfig, build_tiny_pipeline

    root = tmp_path_factory.mktemp("fine_standin")
    torch.manual_seed(0)
    build_tiny_pipeline(TinyModelConfig(**SMALL)).save_pretrained(root / "sd")
    return TigerFinePipeline.from_coarse(root / "sd").save_pretrained(root / "fine")


@pytest.fixture(scope="module", autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def request(fine_folder, dataset, out, mode="diversify", **overrides) -> GenerationRequest:
    values = dict(
        mode=mode,
        model=str(fine_folder),
        dataset=str(dataset),
        out_dir=str(out),
        label="FTC",
        num_images=4,
        seed=3,
        split=SplitConfig(),
        sampling=SamplingConfig(num_inference_steps=2, guidance_scale=2.0),
    )
    values.update(overrides)
    req = GenerationRequest(**values)
    req.runtime.batch_size = overrides.get("batch_size", 2)
    req.runtime.cpu_threads = 1  # far faster than oversubscribed threads on a shared CPU
    return req


def pixels(folder: Path) -> dict[str, np.ndarray]:
    return {
        p.stem: np.asarray(Image.open(p), dtype=np.int16)
        for p in sorted((folder / "images").glob("*.png"))
    }


def test_same_seed_same_images_and_other_seed_differs(fine_folder, phantom_dataset, tmp_path):
    first = request(fine_folder, phantom_dataset, tmp_path / "a", num_images=3)
    run_generation(first)
    again = request(fine_folder, phantom_dataset, tmp_path / "b", num_images=3)
    again.runtime.batch_size = 3  # another batching must not change an image
    run_generation(again)
    other = request(fine_folder, phantom_dataset, tmp_path / "c", num_images=3, seed=4)
    run_generation(other)
    a, b, c = (pixels(tmp_path / name) for name in "abc")
    assert sorted(a) == sorted(b) and len(a) == 3
    for key in a:
        assert np.abs(a[key] - b[key]).max() <= 1
    assert any(np.abs(a[key] - c[key]).mean() > 1 for key in a)


def test_resume_makes_exactly_the_missing_images(
    fine_folder, phantom_dataset, tmp_path, monkeypatch
):
    out = tmp_path / "gen"
    made: list[str] = []
    original = GenerationEngine.generate_batch

    def crash_after_first(self, batch):
        if made:
            raise RuntimeError("simulated crash")
        original(self, batch)
        made.extend(job.id for job in batch)

    monkeypatch.setattr(GenerationEngine, "generate_batch", crash_after_first)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_generation(request(fine_folder, phantom_dataset, out, num_images=5))
    assert sorted(p.stem for p in (out / "images").glob("*.png")) == sorted(made)
    before = {p.name: p.read_bytes() for p in (out / "images").glob("*.png")}

    second: list[str] = []

    def record(self, batch):
        second.extend(job.id for job in batch)
        original(self, batch)

    monkeypatch.setattr(GenerationEngine, "generate_batch", record)
    summary = run_generation(request(fine_folder, phantom_dataset, out, num_images=5))
    assert len(second) == len(set(second)) == 3
    assert not set(second) & set(made)
    assert summary == {"planned": 5, "skipped": 2, "generated": 3, "manifest_rows": 5}
    for name, data in before.items():
        assert (out / "images" / name).read_bytes() == data
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(made + second)
    assert not list(out.rglob("*.tmp"))
    # A third run has nothing left to do; a larger request adds only the new images.
    assert (
        run_generation(request(fine_folder, phantom_dataset, out, num_images=5))["generated"] == 0
    )
    second.clear()
    assert (
        run_generation(request(fine_folder, phantom_dataset, out, num_images=6))["generated"] == 1
    )


def test_provenance_chunk_and_manifest(fine_folder, phantom_dataset, tmp_path):
    out = tmp_path / "gen"
    run_generation(request(fine_folder, phantom_dataset, out, num_images=2))
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        image = out / row["file_name"]
        with Image.open(image) as picture:
            chunk = json.loads(picture.text[PROVENANCE_KEY])
        assert chunk == row and chunk["synthetic"] is True and is_synthetic(image)
        assert row["model_hash"].startswith("sha256:") and len(row["model_hash"]) == 71
        assert row["text_nd"].startswith("malignant, follicular")
        assert (out / row["condition_FG"]).is_file()
        assert Path(row["condition_BG"]).is_file()
        for key in ("prompt", "seed", "scheduler", "steps", "guidance_scale", "mode"):
            assert key in row
    real = read_metadata(phantom_dataset)[0]
    assert read_provenance(Path(phantom_dataset) / "init_image" / real.file_name) is None


def test_reference_mode_uses_train_split_cases(fine_folder, phantom_dataset, tmp_path):
    out = tmp_path / "ref"
    req = request(fine_folder, phantom_dataset, out, mode="reference", num_images=3)
    run_generation(req)
    records = [r for r in read_metadata(phantom_dataset) if r.label]
    splits = assign_records(records, SplitConfig())
    train_cases = {r.case_id for r in records if splits[r.file_name] == "train"}
    by_image = {str(Path(phantom_dataset, "init_image", r.file_name).resolve()): r for r in records}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        reference = by_image[row["reference"]]
        assert reference.label == "FTC" and row["case_id"] == reference.case_id
        assert row["case_id"] in train_cases and row["strength"] == req.sampling.strength
    held_out = next(r for r in records if splits[r.file_name] != "train" and r.label == "FTC")
    source = load_train_source(phantom_dataset, split_config=SplitConfig())
    with pytest.raises(MetadataError, match="not a train-split image"):
        plan_reference(source, "FTC", 2, 0, AttributeConstraints(), [held_out.file_name])


def test_mask_bank_honours_shape_and_size(phantom_dataset):
    source = load_train_source(phantom_dataset, split_config=SplitConfig())
    for kind in ("mixed", "procedural"):
        bank = MaskBank(source, 64, MaskBankConfig(source=kind))
        for seed, asked in enumerate(
            [
                {"shape": "taller-than-wide", "size": "medium", "margins": "spiculated"},
                {"shape": "wider-than-tall", "size": "large"},
            ]
        ):
            draw = bank.draw(asked, seed)
            geometry = measure_mask(draw.mask)
            assert geometry.shape == asked["shape"] and geometry.size == asked["size"]
            assert bank.draw(asked, seed).mask.tobytes() == draw.mask.tobytes()


def test_bad_arguments_give_clear_errors(fine_folder, phantom_dataset, tmp_path, capsys):
    with pytest.raises(AttributeSpecError, match="unknown echogenicity value 'glowing'"):
        AttributeConstraints.from_cli(["echogenicity=glowing"], [])
    with pytest.raises(AttributeSpecError, match="unknown attribute 'colour'"):
        AttributeConstraints.from_cli([], ["colour=red"])
    with pytest.raises(AttributeSpecError, match="leave no value"):
        req = request(fine_folder, phantom_dataset, tmp_path / "x", num_images=1)
        req.constraints = AttributeConstraints(
            fixed={"shape": ["wider-than-tall"]}, excluded={"shape": ["wider-than-tall"]}
        )
        run_generation(req)
    missing = tmp_path / "no_such_model"
    with pytest.raises(GenerationError, match="no_such_model: model folder not found"):
        run_generation(request(missing, phantom_dataset, tmp_path / "y"))
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(GenerationError, match="incomplete fine-stage folder"):
        run_generation(request(empty, phantom_dataset, tmp_path / "z"))
    code = cli_main(
        ["diversify", "--model", str(fine_folder), "--dataset", str(phantom_dataset),
         "--out", str(tmp_path / "cli"), "--label", "FTC", "--fix", "margins=fuzzy"]
    )  # fmt: skip
    assert code == 2
    assert "unknown margins value 'fuzzy'" in capsys.readouterr().err


def test_rerun_with_other_options_is_refused(fine_folder, phantom_dataset, tmp_path):
    out = tmp_path / "gen"
    run_generation(request(fine_folder, phantom_dataset, out, num_images=1))
    changed = request(fine_folder, phantom_dataset, out, num_images=1)
    changed.sampling.guidance_scale = 5.0
    with pytest.raises(GenerationError, match=r"different run.*sampling"):
        run_generation(changed)


def test_processes_share_jobs_without_overlap(phantom_dataset):
    from generation.inference.plan import plan_diversify
    from generation.inference.prompts import PromptConfig

    source = load_train_source(phantom_dataset, split_config=SplitConfig())
    jobs = plan_diversify(source, "FTC", 11, 0, AttributeConstraints(), PromptConfig())
    assert len({job.id for job in jobs}) == 11
    for world in (1, 2, 3, 4):
        shares = [process_share(jobs, rank, world) for rank in range(world)]
        ids = [job.id for share in shares for job in share]
        assert sorted(ids) == sorted(job.id for job in jobs) and len(set(ids)) == len(ids)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    again = plan_diversify(source, "FTC", 11, 0, AttributeConstraints(), PromptConfig())
    assert [j.to_dict() for j in again] == [j.to_dict() for j in jobs]  # same plan everywhere


def test_evaluate_command_scores_a_generated_folder(
    fine_folder, phantom_dataset, phantom_classifier_layout, tmp_path
):
    out = tmp_path / "gen"
    splits = str(phantom_classifier_layout / "splits.json")
    run_generation(
        request(fine_folder, phantom_dataset, out, num_images=3, split=None, splits_file=splits)
    )
    report_file = tmp_path / "evaluation.json"
    code = cli_main(
        ["evaluate", "--gen", str(out), "--dataset", str(phantom_dataset),
         "--splits", splits, "--report", str(report_file)]
    )  # fmt: skip
    assert cli_main(["evaluate", "--gen", str(out), "--dataset", str(phantom_dataset)]) != 0
    assert code == 0
    report = json.loads(report_file.read_text())
    assert report["n_images"] == 3 and report["mask_shape_agreement"] == 1.0
    assert len(report["per_image_memorization"]) == 3
    assert 0.0 <= report["memorization"]["fraction_flagged"] <= 1.0
    for scores in report["agreement"].values():
        assert scores["n"] <= 3 and 0.0 <= scores["agreement"] <= 1.0


def test_sources_need_the_classifier_split(phantom_dataset, phantom_classifier_layout, tmp_path):
    """No silent default seed: without a splits file (or a train-only subset) generation
    refuses; with the classifier's splits.json every source is one of its train cases."""
    from metadata.subset import write_split_subset

    with pytest.raises(MetadataError, match="which cases may generation draw on"):
        load_train_source(phantom_dataset)
    splits_file = phantom_classifier_layout / "splits.json"
    assignments = json.loads(splits_file.read_text())["assignments"]
    source = load_train_source(phantom_dataset, splits_file)
    assert source.records
    assert {assignments[r.file_name]["split"] for r in source.records} == {"train"}
    subset = write_split_subset(phantom_dataset, splits_file, tmp_path / "train_only")
    from_subset = load_train_source(subset)
    assert {r.file_name for r in from_subset.records} == {r.file_name for r in source.records}
