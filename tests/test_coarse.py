"""Coarse stage end to end on a tiny phantom: train, save, load, resume exactly, fail clearly."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from generation.coarse import train as coarse_train
from generation.coarse.cli import config_from_args
from generation.coarse.config import CoarseConfig, CoarseConfigError
from generation.models import SMOKE_TINY_OVERRIDES, PipelineFolderError
from generation.training.checkpoint import list_checkpoints
from generation.training.guard import NonFiniteLossError
from metadata.importers.phantom import build_phantom_dataset

TINY = SMOKE_TINY_OVERRIDES


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("coarse")
    build_phantom_dataset(root / "data", n_images=12, size=32, seed=3)
    (root / "tiny.json").write_text(json.dumps(TINY))
    yield root
    shutil.rmtree(root, ignore_errors=True)  # ~1 GB of runs; CI disks are small


def tiny_config(workspace: Path, output: str, **overrides) -> CoarseConfig:
    values = {
        "train_data_dir": str(workspace / "data"),
        "output_dir": str(workspace / output),
        "tiny_config_file": str(workspace / "tiny.json"),
        "resolution": 32,
        "autoencoder_crop_size": 16,
        "autoencoder_steps": 3,
        "autoencoder_batch_size": 4,
        "train_batch_size": 4,
        "max_train_steps": 6,
        "learning_rate": 1e-3,
        "lr_warmup_steps": 2,
        "checkpointing_steps": 2,
        "checkpoints_total_limit": 2,
        "validation_steps": 100,
        "validation_prompts": ["benign, solid, taller-than-wide"],
        "validation_seeds": [0],
        "validation_inference_steps": 2,
        "report_to": "none",
        "cpu_threads": 1,
        "all_cases": True,
    }
    values.update(overrides)
    return CoarseConfig(**values)


def weights(folder: Path, component: str) -> dict[str, torch.Tensor]:
    return load_file(str(next((folder / component).glob("*.safetensors"))))


@pytest.fixture(scope="module")
def uninterrupted(workspace) -> Path:
    return coarse_train.train_coarse(tiny_config(workspace, "full"))


def test_end_to_end_output_loads(uninterrupted, workspace):
    pipe = StableDiffusionPipeline.from_pretrained(uninterrupted, local_files_only=True)
    image = pipe(
        "benign, solid, wider-than-tall",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert image.shape == (1, 32, 32, 3)
    # Retention: limit 2 of checkpoints 2, 4, 6; stage-0 autoencoder kept; validation grid.
    assert [p.name for p in list_checkpoints(uninterrupted)] == ["checkpoint-4", "checkpoint-6"]
    assert json.loads((uninterrupted / "autoencoder" / "fit_metrics.json").read_text())["steps"]
    assert (uninterrupted / "validation" / "step-000006.png").is_file()
    # The text encoder was trained (tiny default): it differs from a fresh seeded one.
    run = json.loads((uninterrupted / "tiger_coarse.json").read_text())
    assert run["config"]["train_text_encoder"] is None and run["prediction_type"] == "epsilon"
    initial = tiny_config(workspace, "unused")
    torch.manual_seed(initial.seed)
    from generation.models import build_tiny_components

    fresh = build_tiny_components(coarse_train.load_tiny_config(initial)).text_encoder
    trained = pipe.text_encoder.state_dict()
    changed = [k for k, v in fresh.state_dict().items() if not torch.equal(v, trained[k])]
    assert changed


def test_kill_and_resume_equals_uninterrupted(uninterrupted, workspace):
    config = tiny_config(workspace, "killed")

    def kill_at_step_3(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        coarse_train.train_coarse(config, step_callback=kill_at_step_3)
    assert not (workspace / "killed" / "model_index.json").exists()
    assert [p.name for p in list_checkpoints(workspace / "killed")] == ["checkpoint-2"]
    resumed = coarse_train.train_coarse(
        tiny_config(workspace, "killed", resume_from_checkpoint="latest")
    )
    for component in ("unet", "text_encoder"):
        ours, reference = weights(resumed, component), weights(uninterrupted, component)
        assert ours.keys() == reference.keys()
        for key in reference:
            assert torch.equal(ours[key], reference[key]), f"{component}.{key} differs"


def test_resume_with_changed_batch_size_is_refused(uninterrupted, workspace):
    target = workspace / "changed"
    shutil.copytree(uninterrupted / "checkpoint-4", target / "checkpoint-4")
    shutil.copytree(uninterrupted / "autoencoder", target / "autoencoder")
    config = tiny_config(workspace, "changed", resume_from_checkpoint="latest", train_batch_size=2)
    with pytest.raises(ValueError, match="train_batch_size: 4 -> 2"):
        coarse_train.train_coarse(config)


def test_nan_loss_stops_with_checkpoint_intact(workspace, monkeypatch):
    real_loss = coarse_train.diffusion_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(coarse_train, "diffusion_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="checkpoint-2"):
        coarse_train.train_coarse(tiny_config(workspace, "nan"))
    assert [p.name for p in list_checkpoints(workspace / "nan")] == ["checkpoint-2"]
    assert not (workspace / "nan" / "model_index.json").exists()


def test_lora_on_pretrained_folder_is_merged(uninterrupted, workspace):
    config = tiny_config(
        workspace,
        "lora",
        pretrained_model_name_or_path=str(uninterrupted),
        use_lora=True,
        lora_rank=4,
        max_train_steps=2,
        learning_rate=1e-2,
        cache_latents=False,
        center_crop=False,
    )
    output = coarse_train.train_coarse(config)
    # A LoRA checkpoint holds the adapters only, not the whole UNet.
    saved = load_file(str(output / "checkpoint-2" / "model-unet.safetensors"))
    assert saved and all("lora" in key for key in saved)
    tuned, base = weights(output, "unet"), weights(uninterrupted, "unet")
    assert tuned.keys() == base.keys(), "saved UNet must be plain diffusers weights (merged)"
    assert any(not torch.equal(tuned[k], base[k]) for k in base)
    assert weights(output, "text_encoder").keys() == weights(uninterrupted, "text_encoder").keys()
    assert StableDiffusionPipeline.from_pretrained(output, local_files_only=True) is not None


def test_bad_configs_name_the_problem(workspace, tmp_path):
    with pytest.raises(CoarseConfigError, match="--train_data_dir"):
        CoarseConfig(output_dir="x").validate()
    with pytest.raises(CoarseConfigError, match="--lr_scheduler"):
        tiny_config(workspace, "bad", lr_scheduler="sometimes").validate()
    with pytest.raises(CoarseConfigError, match="--use_lora"):
        tiny_config(workspace, "bad", use_lora=True).validate()
    with pytest.raises(CoarseConfigError, match="--caption_dropout"):
        tiny_config(workspace, "bad", caption_dropout=1.5).validate()
    bad_file = tmp_path / "run.json"
    bad_file.write_text(json.dumps({"train_data_dir": "d", "output_dir": "o", "lr": 1}))
    with pytest.raises(CoarseConfigError, match=f"{bad_file}.*unknown option"):
        CoarseConfig.from_file(bad_file)
    with pytest.raises(SystemExit):
        config_from_args(["--train_data_dir", "d", "--output_dir", "o", "--use_ema", "maybe"])
    missing = tiny_config(workspace, "bad", pretrained_model_name_or_path=str(tmp_path / "none"))
    with pytest.raises(PipelineFolderError, match="no such folder"):
        coarse_train.train_coarse(missing)


@pytest.mark.parametrize("center_crop", [True, False])
def test_nodule_loss_weight_changes_training_and_resumes_exactly(workspace, center_crop):
    name = f"nodule_{center_crop}"
    options = {"nodule_loss_weight": 10.0, "center_crop": center_crop, "max_train_steps": 4}
    weighted = coarse_train.train_coarse(tiny_config(workspace, name, **options))
    run = json.loads((weighted / "tiger_coarse.json").read_text())
    assert run["config"]["nodule_loss_weight"] == 10.0
    plain_options = {**options, "nodule_loss_weight": 1.0}
    plain = weights(
        coarse_train.train_coarse(tiny_config(workspace, name + "_plain", **plain_options)), "unet"
    )
    assert any(not torch.equal(v, plain[k]) for k, v in weights(weighted, "unet").items())

    def kill_at_step_3(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        coarse_train.train_coarse(tiny_config(workspace, name + "_k", **options), kill_at_step_3)
    resumed = coarse_train.train_coarse(
        tiny_config(workspace, name + "_k", resume_from_checkpoint="latest", **options)
    )
    ours, reference = weights(resumed, "unet"), weights(weighted, "unet")
    assert all(torch.equal(ours[k], reference[k]) for k in reference)


def test_autoencoder_downsampling_sets_the_latent_grid(workspace):
    no_vae_widths = {k: v for k, v in TINY.items() if k != "vae_block_out_channels"}
    tiny_file = workspace / "tiny_default_vae.json"
    tiny_file.write_text(json.dumps(no_vae_widths))
    options = {"tiny_config_file": str(tiny_file), "max_train_steps": 2}
    folder = coarse_train.train_coarse(
        tiny_config(workspace, "downsampling8", autoencoder_downsampling=8, **options)
    )
    pipeline = StableDiffusionPipeline.from_pretrained(folder)
    assert pipeline.vae_scale_factor == 8
    assert pipeline.unet.config.sample_size == 32 // 8
    image = pipeline(
        "benign",
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (1, 32, 32, 3)
    with pytest.raises(CoarseConfigError, match=r"--autoencoder_downsampling.*power of two"):
        tiny_config(workspace, "bad", autoencoder_downsampling=6).validate()
    with pytest.raises(CoarseConfigError, match=r"--autoencoder_downsampling.*must divide"):
        tiny_config(workspace, "bad", autoencoder_downsampling=32).validate()


class PlantedPickle:
    """Unpickling this writes a marker file: the proof that a checkpoint ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_resume_never_unpickles_a_planted_file(uninterrupted, workspace):
    """accelerate's pickled states (EMA, RNG, optimizer) are neither written nor read: a crafted
    pickle planted under their names does not run, and resume is still exact."""
    import pickle

    config = tiny_config(workspace, "planted")

    def kill_at_step_3(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        coarse_train.train_coarse(config, step_callback=kill_at_step_3)
    checkpoint = workspace / "planted" / "checkpoint-2"
    assert not [p.name for p in checkpoint.iterdir() if p.suffix in (".pkl", ".bin", ".pt")]
    marker = workspace / "planted-marker.txt"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"):
        (checkpoint / name).write_bytes(pickle.dumps(PlantedPickle(marker)))
    resumed = coarse_train.train_coarse(
        tiny_config(workspace, "planted", resume_from_checkpoint="latest")
    )
    assert not marker.exists()
    for component in ("unet", "text_encoder"):
        ours, reference = weights(resumed, component), weights(uninterrupted, component)
        assert all(torch.equal(ours[key], reference[key]) for key in reference)


def test_8bit_adamw_trains_and_resumes_exactly(workspace):
    """bitsandbytes' 8-bit AdamW (the lever that fits SD training into 24 GB): its quantised
    state goes into the safetensors checkpoint and a killed run resumes bit-exact."""
    straight = coarse_train.train_coarse(
        tiny_config(workspace, "adam8-straight", optimizer="adamw8bit", max_train_steps=4)
    )
    config = tiny_config(workspace, "adam8-killed", optimizer="adamw8bit", max_train_steps=4)

    def kill_at_step_3(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        coarse_train.train_coarse(config, step_callback=kill_at_step_3)
    state = load_file(str(workspace / "adam8-killed" / "checkpoint-2" / "optimizer.safetensors"))
    assert any(value.dtype == torch.uint8 for value in state.values())  # 1-byte moments
    resumed = coarse_train.train_coarse(
        tiny_config(
            workspace, "adam8-killed", optimizer="adamw8bit", max_train_steps=4,
            resume_from_checkpoint="latest",
        )
    )  # fmt: skip
    for component in ("unet", "text_encoder"):
        ours, reference = weights(resumed, component), weights(straight, component)
        assert all(torch.equal(ours[key], reference[key]) for key in reference), component


def test_word_dropout_prompts_keep_only_the_records_phrases_and_resume_exactly(workspace):
    """Word dropout leaves out nodule phrases (never adds or reorders one), draws anew each step,
    leaves the other draws of a step alone, and a killed run resumes to the same weights."""
    from generation.coarse.data import load_coarse_dataset
    from generation.coarse.prompts import nodule_phrases

    options = {"word_dropout": 0.5, "max_train_steps": 4}
    config = tiny_config(workspace, "words", **options)
    dataset = load_coarse_dataset(config.train_data_dir, 32, config.prompt_background)
    accelerator = type("OneProcess", (), {"num_processes": 1, "process_index": 0})()
    shortened = 0
    for step in range(6):
        batch = coarse_train.draw_batch(config, len(dataset), step, accelerator)
        plain = coarse_train.draw_batch(
            tiny_config(workspace, "words", max_train_steps=4), len(dataset), step, accelerator
        )
        assert plain.phrase_keep is None
        assert torch.equal(batch.indices, plain.indices) and torch.equal(batch.flips, plain.flips)
        prompts = coarse_train.word_dropout_prompts(config, dataset, batch)
        again = coarse_train.draw_batch(config, len(dataset), step, accelerator)
        assert prompts == coarse_train.word_dropout_prompts(config, dataset, again)
        for row, (index, prompt) in enumerate(zip(batch.indices.tolist(), prompts, strict=True)):
            if bool(batch.dropped[row]):
                assert prompt == ""
                continue
            full = nodule_phrases(dataset.records[index].text_nd)
            kept = [p for p in full if bool(batch.phrase_keep[row, full.index(p)])]
            assert prompt.startswith(", ".join(kept))
            shortened += len(kept) < len(full)
    assert shortened > 0

    trained = coarse_train.train_coarse(config)
    run = json.loads((trained / "tiger_coarse.json").read_text())
    assert run["config"]["word_dropout"] == 0.5
    plain = weights(
        coarse_train.train_coarse(tiny_config(workspace, "words_plain", max_train_steps=4)), "unet"
    )
    assert any(not torch.equal(v, plain[k]) for k, v in weights(trained, "unet").items())

    def kill_at_step_3(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        coarse_train.train_coarse(tiny_config(workspace, "words_k", **options), kill_at_step_3)
    with pytest.raises(ValueError, match="word_dropout"):
        coarse_train.train_coarse(
            tiny_config(workspace, "words_k", resume_from_checkpoint="latest", max_train_steps=4)
        )
    resumed = coarse_train.train_coarse(
        tiny_config(workspace, "words_k", resume_from_checkpoint="latest", **options)
    )
    ours, reference = weights(resumed, "unet"), weights(trained, "unet")
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
