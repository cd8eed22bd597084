"""Fine stage: fusion, per-sample control, save/load, coarse equivalence, exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, DDIMScheduler
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from safetensors.torch import load_file

from generation.fine.conditions import to_condition_tensor
from generation.fine.config import FineConfig, FineConfigError
from generation.fine.data import ConditionCache, flip_where, load_fine_dataset
from generation.fine.model import (
    BranchInputs,
    DualControlNetModel,
    FineModelError,
    outside_nodule,
    predict_noise,
    validate_fine_folder,
)
from generation.fine.pipeline import TigerFinePipeline
from generation.models import (
    TinyModelConfig,
    build_tiny_components,
    build_tiny_pipeline,
    vae_downsampling,
)
from generation.training.state import OPTIMIZER_TENSORS
from metadata.records import MetadataError

RESOLUTION = 32


def tiny_config() -> TinyModelConfig:
    return TinyModelConfig(
        resolution=RESOLUTION,
        vae_block_out_channels=(8, 16, 16),
        vae_norm_num_groups=8,
        unet_block_out_channels=(16, 32, 32),
        unet_norm_num_groups=8,
        unet_attention_head_dim=8,
        text_hidden_size=32,
        text_num_layers=1,
        text_num_heads=2,
        text_intermediate_size=64,
    )


def randomise_zero_convs(dual: DualControlNetModel, seed: int = 0) -> None:
    """Fresh branches ignore the condition and emit zero residuals (zero convolutions at the
    condition input and at every output); give those weights so the tests can see them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for branch in dual.branches:
            blocks = [*branch.controlnet_down_blocks, branch.controlnet_mid_block]
            for block in [*blocks, branch.controlnet_cond_embedding.conv_out]:
                block.weight.copy_(torch.randn(block.weight.shape, generator=generator) * 0.1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared CPU run far faster on one thread (no OpenMP contention)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def components():
    torch.manual_seed(0)
    return build_tiny_components(tiny_config())


@pytest.fixture(scope="module")
def coarse_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("coarse") / "sd"
    build_tiny_pipeline(tiny_config()).save_pretrained(folder)
    return folder


def step_inputs(components, batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    size = RESOLUTION // 4
    latents = torch.randn((batch, 4, size, size), generator=generator)
    ids = components.tokenizer(
        ["benign, solid"] * batch, padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    hidden = components.text_encoder(ids)[0]
    timesteps = torch.full((batch,), 500)
    return latents, hidden, timesteps


def square_masks() -> torch.Tensor:
    masks = torch.zeros(2, 3, RESOLUTION, RESOLUTION)
    masks[0, :, 4:14, 4:14] = 1.0
    masks[1, :, 16:30, 10:28] = 1.0
    return masks


@torch.no_grad()
def test_gate_at_init_equals_sum_of_residuals_and_diffusers_multicontrolnet(components):
    dual = DualControlNetModel.from_unet(components.unet, vae_downsampling(components.vae))
    randomise_zero_convs(dual)
    latents, hidden, timesteps = step_inputs(components)
    masks = square_masks()
    tissue = torch.rand(2, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(1))
    fused_down, fused_mid = dual(latents, timesteps, hidden, masks, hidden, tissue)
    fg_down, fg_mid = dual.branch_residuals(0, latents, timesteps, hidden, masks, 1.0)
    bg_down, bg_mid = dual.branch_residuals(1, latents, timesteps, hidden, tissue, 1.0)
    assert any(r.abs().max() > 0 for r in fg_down)
    for fused, a, b in zip(fused_down, fg_down, bg_down, strict=True):
        torch.testing.assert_close(fused, a + b)
    torch.testing.assert_close(fused_mid, fg_mid + bg_mid)
    # Same as diffusers' multi-ControlNet (plain sum) with the same prompt for both branches.
    multi = MultiControlNetModel(list(dual.branches))
    multi_down, multi_mid = multi(
        latents, timesteps, hidden, [masks, tissue], [1.0, 1.0], return_dict=False
    )
    for ours, theirs in zip(fused_down, multi_down, strict=True):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(fused_mid, multi_mid)
    # A trained gate is no longer the sum.
    dual.fusion.mid_logits.fill_(1.0)
    _, gated_mid = dual(latents, timesteps, hidden, masks, hidden, tissue)
    assert not torch.allclose(gated_mid, fg_mid + bg_mid)


@torch.no_grad()
def test_each_sample_keeps_its_own_mask(components):
    dual = DualControlNetModel.from_unet(components.unet, vae_downsampling(components.vae))
    randomise_zero_convs(dual)
    latents, hidden, timesteps = step_inputs(components)
    latents[1] = latents[0]  # identical noise and text: only the mask differs
    masks = square_masks()
    tissue = torch.full((2, 3, RESOLUTION, RESOLUTION), 0.5)
    fg = BranchInputs(hidden, masks)
    bg = BranchInputs(hidden, tissue)
    different = predict_noise(components.unet, dual, latents, timesteps, hidden, fg, bg)
    assert (different[0] - different[1]).abs().max() > 1e-4
    same_masks = BranchInputs(hidden, masks[:1].expand(2, -1, -1, -1))
    same = predict_noise(components.unet, dual, latents, timesteps, hidden, same_masks, bg)
    torch.testing.assert_close(same[0], same[1])


def run_pipeline(pipeline: TigerFinePipeline, scale=1.0, **extra) -> np.ndarray:
    pipeline.set_progress_bar_config(disable=True)
    return pipeline(
        text_nd=["benign, solid, hypoechoic", "malignant, medullary"],
        text_bg=["bright, low contrast", "dark"],
        condition_FG=square_masks(),
        condition_BG=torch.full((3, RESOLUTION, RESOLUTION), 0.6),
        num_inference_steps=3,
        guidance_scale=3.0,
        conditioning_scale=scale,
        generator=[torch.Generator().manual_seed(seed) for seed in (0, 1)],
        output_type="np",
        **extra,
    ).images


def test_fresh_branches_and_zero_scale_equal_the_coarse_model(components):
    pipeline = TigerFinePipeline.from_coarse(components, prompt_background="words")
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    coarse = components.to_pipeline()
    coarse.set_progress_bar_config(disable=True)
    prompts = ["benign, solid, hypoechoic; bright, low contrast", "malignant, medullary; dark"]
    expected = coarse(
        prompts,
        num_inference_steps=3,
        guidance_scale=3.0,
        generator=[torch.Generator().manual_seed(seed) for seed in (0, 1)],
        output_type="np",
    ).images
    np.testing.assert_allclose(run_pipeline(pipeline), expected, atol=1e-5)
    randomise_zero_convs(pipeline.controlnet)
    controlled = run_pipeline(pipeline)
    assert np.abs(controlled - expected).max() > 1e-3
    np.testing.assert_allclose(run_pipeline(pipeline, scale=0.0), expected, atol=1e-5)


def test_save_load_round_trip_gives_identical_outputs(components, tmp_path):
    pipeline = TigerFinePipeline.from_coarse(components, fusion="gate", prompt_background="words")
    randomise_zero_convs(pipeline.controlnet, seed=3)
    with torch.no_grad():
        for logits in pipeline.controlnet.fusion.down_logits:
            logits.normal_()
    before = run_pipeline(pipeline, scale=(1.0, 0.7))
    pipeline.save_pretrained(tmp_path / "fine")
    validate_fine_folder(tmp_path / "fine")
    ControlNetModel.from_pretrained(tmp_path / "fine" / "controlnet_fg")  # diffusers format
    loaded = TigerFinePipeline.from_pretrained(tmp_path / "fine")
    assert loaded.config.prompt_background == "words"
    np.testing.assert_array_equal(run_pipeline(loaded, scale=(1.0, 0.7)), before)
    image2image = run_pipeline(loaded, image=before[0], strength=0.5)
    assert image2image.shape == before.shape


def test_incomplete_folder_and_bad_conditions_are_named(tmp_path):
    (tmp_path / "fine" / "controlnet_fg").mkdir(parents=True)
    with pytest.raises(FineModelError, match=r"controlnet_bg/config\.json missing"):
        validate_fine_folder(tmp_path / "fine")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_condition_tensor(torch.full((3, 8, 8), 2.0), 8)
    with pytest.raises(FineConfigError, match="--fusion"):
        FineConfig(train_data_dir="d", output_dir="o", coarse_model_path="c", fusion="x").validate()


def test_crops_and_flips_reach_image_and_both_conditions(
    phantom_dataset, phantom_classifier_layout
):
    dataset = load_fine_dataset(phantom_dataset, RESOLUTION)
    fg, bg = dataset.load_conditions([0, 1])
    assert fg.min() >= 0 and fg.max() <= 1 and fg.max() == 1
    pixels = dataset.load_pixels([0, 1])
    assert pixels.min() >= -1 and pixels.max() <= 1 and pixels.min() < 0
    flips = torch.tensor([True, False])
    cache = ConditionCache.build(dataset)
    cached_fg, cached_bg = cache.batch(torch.tensor([0, 1]), flips)
    torch.testing.assert_close(cached_fg, flip_where(fg, flips), atol=1 / 255, rtol=0)
    torch.testing.assert_close(cached_fg[0], torch.flip(fg[0], dims=[-1]), atol=1 / 255, rtol=0)
    torch.testing.assert_close(cached_bg[1], bg[1], atol=1 / 255, rtol=0)
    splits = phantom_classifier_layout / "splits.json"
    held_out = load_fine_dataset(phantom_dataset, RESOLUTION, "full", splits, split="valid")
    train = load_fine_dataset(phantom_dataset, RESOLUTION, "full", splits)
    assert held_out.records and len(train) < len(dataset)
    assert not {r.case_id for r in held_out.records} & {r.case_id for r in train.records}
    # Without a splits file the stage refuses to choose cases silently.
    with pytest.raises(MetadataError, match="which cases may it use"):
        load_fine_dataset(phantom_dataset, RESOLUTION, all_cases=False)


def fine_config(data: Path, coarse: Path, output: Path, **overrides) -> FineConfig:
    values = dict(
        train_data_dir=str(data),
        output_dir=str(output),
        coarse_model_path=str(coarse),
        resolution=RESOLUTION,
        train_batch_size=2,
        gradient_accumulation_steps=2,
        max_train_steps=4,
        learning_rate=1e-3,
        lr_warmup_steps=1,
        checkpointing_steps=2,
        num_validation_items=1,
        validation_seeds=[0],
        validation_steps=4,
        validation_inference_steps=2,
        report_to="none",
        all_cases=True,
    )
    values.update(overrides)
    return FineConfig(**values)


def test_kill_and_resume_equals_uninterrupted_run(phantom_dataset, coarse_folder, tmp_path):
    from generation.fine.train import train_fine

    straight = train_fine(fine_config(phantom_dataset, coarse_folder, tmp_path / "straight"))

    class Killed(RuntimeError):
        pass

    def kill_at_three(step: int) -> None:
        if step == 3:
            raise Killed

    interrupted = fine_config(phantom_dataset, coarse_folder, tmp_path / "resumed")
    with pytest.raises(Killed):
        train_fine(interrupted, step_callback=kill_at_three)
    resumed = fine_config(
        phantom_dataset, coarse_folder, tmp_path / "resumed", resume_from_checkpoint="latest"
    )
    train_fine(resumed)
    first = DualControlNetModel.from_pretrained(straight).state_dict()
    second = DualControlNetModel.from_pretrained(tmp_path / "resumed").state_dict()
    start = DualControlNetModel.from_unet(
        TigerFinePipeline.from_pretrained(straight).unet, downsampling=4
    ).state_dict()
    moved = [name for name in first if not torch.equal(first[name], start[name])]
    assert any("controlnet_down_blocks" in name for name in moved)  # the branches trained
    assert any("logits" in name for name in moved)  # the gate trained
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor, rtol=0, atol=0, msg=name)
    assert (straight / "validation" / "step-000004.png").is_file()
    # Gradient accumulation is applied: 4 optimizer steps for 8 micro-batches.
    # The optimizer state is safetensors (no pickle anywhere in a checkpoint).
    optimizer = load_file(str(straight / "checkpoint-4" / OPTIMIZER_TENSORS))
    steps = {int(value) for key, value in optimizer.items() if key.endswith(".step")}
    assert steps == {4}
    assert not list((straight / "checkpoint-4").glob("*.pkl"))


def test_cli_profile_and_flags_build_a_valid_config():
    from generation.fine.cli import config_from_args, main

    config = config_from_args(
        ["--profile", "quick", "--train_data_dir", "d", "--coarse_model_path", "c",
         "--output_dir", "o", "--fusion", "sum", "--validation_seeds", "3", "4"]
    )  # fmt: skip
    assert config.fusion == "sum" and config.validation_seeds == [3, 4]
    assert config.max_train_steps == 240 and config.cpu_threads == 1
    assert main(["--train_data_dir", "d", "--output_dir", "o"]) == 2  # no coarse model


@torch.no_grad()
def test_background_outside_nodule_keeps_the_bg_branch_out_of_the_mask_only(components):
    """A mask over the whole frame leaves the FG branch alone; an empty mask changes nothing; a
    square mask silences the BG residuals in the cells it covers and keeps them elsewhere."""
    dual = DualControlNetModel.from_unet(components.unet, vae_downsampling(components.vae))
    randomise_zero_convs(dual)
    dual.fusion.mid_logits.fill_(0.5)  # a trained (non-sum) gate
    latents, hidden, timesteps = step_inputs(components)
    tissue = torch.rand(2, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(1))
    full, empty = (
        torch.ones(2, 3, RESOLUTION, RESOLUTION),
        torch.zeros(2, 3, RESOLUTION, RESOLUTION),
    )
    fg = BranchInputs(hidden, full)
    kept_out = predict_noise(
        components.unet, dual, latents, timesteps, hidden, fg, BranchInputs(hidden, tissue), True
    )
    fg_only = predict_noise(components.unet, dual, latents, timesteps, hidden, fg, None)
    torch.testing.assert_close(kept_out, fg_only)
    both = predict_noise(
        components.unet, dual, latents, timesteps, hidden, fg, BranchInputs(hidden, tissue)
    )
    assert (both - fg_only).abs().max() > 1e-4  # the BG branch does act without the option
    fg_empty = BranchInputs(hidden, empty)
    bg = BranchInputs(hidden, tissue)
    torch.testing.assert_close(
        predict_noise(components.unet, dual, latents, timesteps, hidden, fg_empty, bg, True),
        predict_noise(components.unet, dual, latents, timesteps, hidden, fg_empty, bg),
    )
    masks = square_masks()
    bg_down, _ = dual.branch_residuals(1, latents, timesteps, hidden, tissue, 1.0)
    down, _ = outside_nodule(bg_down, bg_down[-1], masks)
    for weighted, original in zip(down, bg_down, strict=True):
        covered = torch.nn.functional.adaptive_avg_pool2d(masks[:, :1], original.shape[-2:])
        inside, outside = covered.expand_as(original) == 1, covered.expand_as(original) == 0
        if inside.any():
            assert weighted[inside].abs().max() == 0
        torch.testing.assert_close(weighted[outside], original[outside])
    assert (down[0] != bg_down[0]).any() and (down[0][:, :, 0, 0] == bg_down[0][:, :, 0, 0]).all()
