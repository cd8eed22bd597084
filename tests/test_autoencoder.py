"""Stage-0 autoencoder: crops, metrics that tell blur from speckle, a fit that improves."""

from __future__ import annotations

import json

import pytest
import torch

from generation.autoencoder.cli import main as autoencoder_cli
from generation.autoencoder.metrics import gaussian_blur, texture_metrics
from generation.autoencoder.train import (
    METRICS_FILE,
    AutoencoderFitConfig,
    evaluate_autoencoder,
    fit_autoencoder,
    random_crops,
    reconstruction_loss,
)
from generation.models import TinyModelConfig, build_tiny_vae
from metadata.importers.phantom import build_phantom_dataset

SMALL_VAE = TinyModelConfig(resolution=32, vae_block_out_channels=(16, 16), vae_norm_num_groups=8)


def speckle(count: int = 4, size: int = 32) -> torch.Tensor:
    torch.manual_seed(0)
    base = torch.rand(count, 1, size, size) * 1.6 - 0.8
    return base.repeat(1, 3, 1, 1)


def test_metrics_separate_identity_blur_and_flat():
    real = speckle()
    same = texture_metrics(real, real)
    assert same.local_std_ratio == 1.0 and same.local_variance_histogram_distance == 0.0
    blurred = texture_metrics(real, gaussian_blur(real))
    assert blurred.local_std_ratio < 0.6 and blurred.local_variance_histogram_distance > 0.3
    flat = texture_metrics(real, torch.zeros_like(real))
    assert flat.local_std_ratio < 0.01 and flat.psnr < blurred.psnr


def test_random_crops_are_seeded_and_sized():
    images = speckle(3)
    first = random_crops(images, 16, 5, torch.Generator().manual_seed(1))
    again = random_crops(images, 16, 5, torch.Generator().manual_seed(1))
    assert first.shape == (5, 3, 16, 16) and torch.equal(first, again)


def test_fit_improves_reconstruction():
    torch.manual_seed(0)
    layout = torch.nn.functional.interpolate(torch.rand(8, 1, 4, 4), size=32, mode="bilinear")
    images = (layout * 1.4 - 0.7 + 0.1 * torch.randn(8, 1, 32, 32)).repeat(1, 3, 1, 1)
    vae = build_tiny_vae(SMALL_VAE)
    before = evaluate_autoencoder(vae, images)["autoencoder"]["psnr"]
    fit = AutoencoderFitConfig(steps=40, crop_size=16, batch_size=8, learning_rate=3e-3)
    fit_autoencoder(vae, images, fit)
    after = evaluate_autoencoder(vae, images)["autoencoder"]["psnr"]
    assert after > before + 1.0
    assert not any(p.requires_grad for p in vae.parameters())


def test_texture_term_penalises_blur_not_identity():
    real = speckle(2)
    assert reconstruction_loss(real, real, 0.0, 1.0).item() == pytest.approx(0.0, abs=1e-3)
    blurred = gaussian_blur(real)
    plain = reconstruction_loss(real, blurred, 0.0, 0.0).item()
    assert reconstruction_loss(real, blurred, 0.0, 1.0).item() > plain + 0.01


def test_cli_writes_a_loadable_autoencoder(tmp_path):
    build_phantom_dataset(tmp_path / "data", n_images=6, size=32, seed=2)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"vae_block_out_channels": [16, 16], "vae_norm_num_groups": 8}))
    out = tmp_path / "vae"
    assert autoencoder_cli(["--data", str(tmp_path / "data"), "--out", str(out), "--resolution",
                            "32", "--tiny_config_file", str(config), "--steps", "2",
                            "--crop_size", "16", "--batch_size", "2"]) == 0  # fmt: skip
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["steps"] == 2 and metrics["scaling_factor"] > 0
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(out, local_files_only=True)
    assert vae.config.scaling_factor == metrics["scaling_factor"]


def test_texture_metrics_of_flat_images_raise_no_warning():
    """A flat frame (zero local variance everywhere) once divided 0 by 0 in the histogram."""
    import warnings

    flat = torch.zeros(2, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = texture_metrics(flat, flat)
    assert metrics.local_variance_histogram_distance == 0.0
