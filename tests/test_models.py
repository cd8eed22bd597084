"""Tiny pipeline construction, round trip through from_pretrained, and folder errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import StableDiffusionPipeline

from generation.models import (
    PipelineFolderError,
    TinyModelConfig,
    build_tiny_pipeline,
    load_pipeline,
    load_pipeline_components,
    validate_pipeline_folder,
)

SMALL = TinyModelConfig(
    resolution=32,
    vae_block_out_channels=(16, 16),
    vae_norm_num_groups=8,
    unet_block_out_channels=(16, 32, 32),
    unet_attention_head_dim=8,
    unet_norm_num_groups=8,
    text_hidden_size=32,
    text_num_layers=1,
    text_intermediate_size=64,
)


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "pipeline"
    build_tiny_pipeline(SMALL).save_pretrained(folder)
    return folder


def test_tiny_geometry():
    config = TinyModelConfig()
    assert config.vae_downsampling == 4 and config.latent_size == 32
    pipe = build_tiny_pipeline(SMALL)
    assert pipe.vae_scale_factor == 2
    latents = pipe.vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean
    assert latents.shape == (1, 4, 16, 16)
    cross = [n for n, _ in pipe.unet.attn_processors.items() if "attn2" in n]
    assert cross, "the UNet must have cross-attention layers"


def test_round_trip_generates(saved_folder):
    pipe = StableDiffusionPipeline.from_pretrained(saved_folder, local_files_only=True)
    ours = load_pipeline(saved_folder)
    assert type(ours.scheduler) is type(pipe.scheduler)
    images = ours(
        "malignant, taller-than-wide",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (1, 32, 32, 3)


def test_prediction_type_from_scheduler_config(saved_folder, tmp_path):
    folder = tmp_path / "vpred"
    shutil.copytree(saved_folder, folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["prediction_type"] = "v_prediction"
    config_file.write_text(json.dumps(config))
    components = load_pipeline_components(folder)
    assert components.prediction_type == "v_prediction"
    assert components.noise_scheduler().config.prediction_type == "v_prediction"
    assert load_pipeline_components(saved_folder).prediction_type == "epsilon"


def test_missing_and_incomplete_folders(saved_folder, tmp_path):
    with pytest.raises(PipelineFolderError, match="no such folder"):
        validate_pipeline_folder(tmp_path / "absent")
    broken = tmp_path / "broken"
    shutil.copytree(saved_folder, broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.unlink()
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(PipelineFolderError) as error:
        load_pipeline_components(broken)
    message = str(error.value)
    assert str(broken) in message and "unet/ has no weights" in message
    assert "tokenizer/ missing" in message


def test_bad_tiny_config():
    with pytest.raises(ValueError, match="prediction_type"):
        TinyModelConfig(prediction_type="sample")
    with pytest.raises(ValueError, match="multiple"):
        TinyModelConfig(resolution=130)
    with pytest.raises(ValueError, match="unknown TinyModelConfig"):
        TinyModelConfig.from_dict({"width": 3})
    assert TinyModelConfig.from_dict(SMALL.to_dict()) == SMALL


def test_text_time_embedding_makes_the_prompt_reach_the_time_embedding(tmp_path):
    """With unet_text_time_embedding the pooled prompt changes the output even with every
    cross-attention output zeroed; the saved folder keeps the option."""
    from dataclasses import replace

    torch.manual_seed(0)
    pipe = build_tiny_pipeline(replace(SMALL, unet_text_time_embedding=True))
    unet = pipe.unet.eval()
    for name, module in unet.named_modules():
        if name.endswith("attn2.to_out.0"):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    latents, step = torch.randn(1, 4, 16, 16), torch.tensor([500])
    a, b = torch.randn(2, 1, 77, 32).unbind(0)
    with torch.no_grad():
        differ = (unet(latents, step, a).sample - unet(latents, step, b).sample).abs().max()
    assert differ > 1e-4
    pipe.save_pretrained(tmp_path / "p")
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path / "p")
    assert loaded.unet.config.addition_embed_type == "text"
