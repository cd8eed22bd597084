"""Several processes on CPUs, launched the way users launch them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from generation.models import SMOKE_TINY_OVERRIDES
from generation.training.launch import (
    LaunchError,
    check_process_group,
    requested_processes,
    single_process_cpu_launch,
)

TINY = SMOKE_TINY_OVERRIDES


def test_the_simple_cpu_launcher_is_recognised_and_its_count_read():
    launched = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert single_process_cpu_launch(launched)
    assert not single_process_cpu_launch({**launched, "WORLD_SIZE": "2"})  # torchrun did it
    assert not single_process_cpu_launch({**launched, "OMPI_COMM_WORLD_SIZE": "2"})  # MPI did
    assert not single_process_cpu_launch({"ACCELERATE_USE_CPU": "True"})  # one process asked
    line = ["python", "accelerate", "launch", "--cpu", "--num_processes", "3", "-m", "x"]
    assert requested_processes(line) == 3
    assert requested_processes(["accelerate", "launch", "--num_processes=4", "t.py"]) == 4
    assert requested_processes(["accelerate", "launch", "t.py"]) is None


def test_processes_that_do_not_form_one_group_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LaunchError, match="--multi_gpu needs CUDA"):
        check_process_group(1, cuda_available=False)
    check_process_group(2, cuda_available=False)  # one group of two: fine
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_process_group(1, cuda_available=False)


def test_accelerate_launch_cpu_two_processes_trains_as_one_group(tmp_path):
    """`accelerate launch --cpu --num_processes 2` really trains on two processes (accelerate
    alone would start one), and only rank 0 prints the result."""
    from metadata.importers.phantom import build_phantom_dataset

    build_phantom_dataset(tmp_path / "data", n_images=12, size=32, seed=3)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
        "-m", "generation.coarse.cli", "--train_data_dir", str(tmp_path / "data"),
        "--output_dir", str(tmp_path / "out"), "--tiny_config_file", str(tmp_path / "tiny.json"),
        "--resolution", "32", "--autoencoder_crop_size", "16", "--autoencoder_steps", "2",
        "--autoencoder_batch_size", "4", "--train_batch_size", "2", "--max_train_steps", "2",
        "--checkpointing_steps", "2", "--validation_prompts", "--report_to", "none",
        "--cpu_threads", "1", "--all_cases", "true",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((tmp_path / "out" / "tiger_coarse.json").read_text())
    assert run["num_processes"] == 2
    assert (done.stdout + done.stderr).count("pipeline saved to") == 1
    assert (tmp_path / "out" / "model_index.json").is_file()
