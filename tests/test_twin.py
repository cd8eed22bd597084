"""The SD twin: published architectures with random weights, and the pretrained-folder code path
through every stage on a width-scaled copy (same topology, channels / 8)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from generation.twin import build_twin_pipeline, parameter_counts, write_twin

PUBLISHED_MILLIONS = {  # parameters of the released checkpoints
    "sd15": {"unet": 859.5, "text_encoder": 123.1, "vae": 83.7},
    "sd21base": {"unet": 865.9, "text_encoder": 340.4, "vae": 83.7},
    "sd21": {"unet": 865.9, "text_encoder": 340.4, "vae": 83.7},
}


@pytest.mark.parametrize("arch", sorted(PUBLISHED_MILLIONS))
def test_twin_has_the_published_sizes(arch):
    with torch.device("meta"):
        pipeline = build_twin_pipeline(arch)
    counts = {k: round(v / 1e6, 1) for k, v in parameter_counts(pipeline).items()}
    assert counts == PUBLISHED_MILLIONS[arch]
    assert pipeline.scheduler.config.prediction_type == (
        "v_prediction" if arch == "sd21" else "epsilon"
    )


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("twin") / "sd21base-w8"
    write_twin("sd21base", folder, width_divisor=8)
    return folder


def test_gpu_check_falls_back_to_a_width_scaled_twin_through_every_stage(tmp_path):
    """benchmarks/gpu_check.sh without CUDA: `tiger run --profile gpu` from a width/8 SD 2.1-base
    twin's folder through every stage, plus the coarse stage's LoRA route."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        ["bash", str(root / "benchmarks" / "gpu_check.sh")],
        env={**os.environ, "WORK": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "CPU fallback" in done.stderr
    result = json.loads((tmp_path / "cpu_fallback.json").read_text())
    assert result["all_passed"] and result["pipeline_exit_code"] == 0
    stages = result["stages"]
    expected = {"coarse", "fine", "generate-FTC", "clip", "filter-FTC", "classifier-FTC"}
    assert expected | {"coarse-lora"} <= set(stages)
    assert stages["coarse"]["s_per_step"] > 0 and stages["fine"]["s_per_step"] > 0
    run = tmp_path / "run"
    coarse = json.loads((run / "coarse" / "tiger_coarse.json").read_text())
    assert coarse["config"]["pretrained_model_name_or_path"].endswith("twin-sd21base-w8")
    assert coarse["tiny_config"] is None and coarse["config"]["optimizer"] == "adamw8bit"
    # The fine stage reused the coarse stage's latent cache instead of writing a second one.
    assert list((run / "coarse" / "cache").glob("latents-*.safetensors"))
    assert not (run / "fine" / "cache").exists()


def test_lora_on_the_twin_checkpoints_adapters_only(twin, tmp_path, phantom_dataset):
    from generation.coarse.config import CoarseConfig
    from generation.coarse.train import train_coarse

    config = CoarseConfig(
        train_data_dir=str(phantom_dataset),
        output_dir=str(tmp_path / "lora"),
        pretrained_model_name_or_path=str(twin),
        all_cases=True,
        use_lora=True,
        lora_rank=4,
        resolution=64,
        train_batch_size=2,
        max_train_steps=1,
        checkpointing_steps=1,
        validation_prompts=[],
        report_to="none",
    )
    output = train_coarse(config)
    adapters = load_file(str(output / "checkpoint-1" / "model-unet.safetensors"))
    assert adapters and all("lora" in key for key in adapters)
    unet_bytes = sum(p.stat().st_size for p in (twin / "unet").glob("*.safetensors"))
    checkpoint_bytes = sum(p.stat().st_size for p in (output / "checkpoint-1").iterdir())
    assert checkpoint_bytes < unet_bytes / 5
    assert StableDiffusionPipeline.from_pretrained(output, local_files_only=True) is not None
