"""The memory plan said before training, and the refusal when a run cannot fit."""

from __future__ import annotations

import pytest
import torch

from generation.training import memory
from generation.training.memory import GIB, MemoryPlanError, check_plan, training_plan


def plan(optimizer: str, ema: bool, batch: int = 1):
    return training_plan(
        "coarse", trained=1_000_000, frozen=500_000, weight_bytes=2, optimizer=optimizer,
        ema_on_device=ema, batch_size=batch, unet_channels=[32, 64], latent_size=16,
        gradient_checkpointing=True, activation_bytes=2,
    )  # fmt: skip


def test_fixed_state_is_counted_per_parameter():
    adamw, eight_bit = plan("adamw", ema=True), plan("adamw8bit", ema=False)
    assert adamw.parts["weights"] == 4 * 1_000_000 + 2 * 500_000
    assert adamw.parts["gradients"] == 4 * 1_000_000
    assert adamw.parts["optimizer"] == 8 * 1_000_000 and eight_bit.parts["optimizer"] == 2_000_000
    assert adamw.parts["ema"] == 4 * 1_000_000 and eight_bit.parts["ema"] == 0
    assert plan("adamw", True, batch=4).parts["activations"] == 4 * adamw.parts["activations"]
    assert "total" in adamw.table() and "optimizer" in adamw.table()


def test_a_run_that_cannot_fit_is_refused_with_the_plan(monkeypatch):
    big = plan("adamw", ema=True)
    monkeypatch.setattr(memory, "device_capacity", lambda device: big.total / 2)
    with pytest.raises(MemoryPlanError, match=r"(?s)coarse needs about .* GiB.*adamw8bit"):
        check_plan(big, torch.device("cpu"))
    check_plan(big, torch.device("cpu"), allow_over=True)
    monkeypatch.setattr(memory, "device_capacity", lambda device: 3 * big.total)
    with pytest.raises(MemoryPlanError):  # four CPU processes share the machine's memory
        check_plan(big, torch.device("cpu"), processes=4)
    check_plan(big, torch.device("cpu"), processes=2)


def test_training_refuses_before_any_work(phantom_dataset, tmp_path, monkeypatch):
    from generation.coarse.config import CoarseConfig
    from generation.coarse.train import train_coarse

    monkeypatch.setattr(memory, "device_capacity", lambda device: 1.0 * GIB / 1024)
    config = CoarseConfig(
        train_data_dir=str(phantom_dataset), output_dir=str(tmp_path / "out"), all_cases=True,
        resolution=32, autoencoder_crop_size=16, autoencoder_steps=2, max_train_steps=2,
        report_to="none",
    )  # fmt: skip
    with pytest.raises(MemoryPlanError, match="coarse needs about"):
        train_coarse(config)
    assert not list((tmp_path / "out").glob("checkpoint-*"))
