"""The documented routes train with one recipe: scripts/Tiger-Coarse.sh, scripts/Tiger-Fine.sh
and `tiger run --profile gpu` resolve to the same stage configs (paths aside)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from generation.coarse import cli as coarse_cli
from generation.fine import cli as fine_cli
from scripts.pipeline.config import load_config
from scripts.pipeline.stages import Layout, diffusion_stages

ROOT = Path(__file__).resolve().parents[1]
PATHS = {"train_data_dir", "output_dir", "coarse_model_path", "splits_file"}


def script_command(name: str, *args: str, **env: str) -> list[str]:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *args],
        env={**os.environ, "TIGER_PRINT_COMMAND": "1", **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return done.stdout.splitlines()


def resolved(command: list[str], module: str, parse) -> dict:
    config = parse(command[command.index(module) + 1 :]).to_dict()
    return {key: value for key, value in config.items() if key not in PATHS}


@pytest.fixture(scope="module")
def pipeline_commands(tmp_path_factory) -> dict[str, list[str]]:
    run_dir = tmp_path_factory.mktemp("gpu-run")
    config = load_config(
        "gpu", overrides={"run_dir": str(run_dir), "pretrained_model_name_or_path": "/models/sd"}
    )
    coarse, fine = diffusion_stages(config, Layout(run_dir))
    return {"coarse": coarse.commands[0], "fine": fine.commands[0]}


def test_coarse_script_and_gpu_profile_agree(pipeline_commands):
    script = script_command("Tiger-Coarse.sh", "DATA", "OUT", "/models/sd", DEVICE="gpu")
    ours = resolved(script, "generation.coarse.cli", coarse_cli.config_from_args)
    pipeline = resolved(
        pipeline_commands["coarse"], "generation.coarse.cli", coarse_cli.config_from_args
    )
    assert ours == pipeline
    assert ours["resolution"] == 512 and ours["mixed_precision"] == "bf16"
    assert ours["gradient_checkpointing"] is True
    # An environment override changes that value only.
    changed = script_command(
        "Tiger-Coarse.sh", "D", "O", "/models/sd", DEVICE="gpu", RESOLUTION="768"
    )
    assert resolved(changed, "generation.coarse.cli", coarse_cli.config_from_args) == {
        **ours,
        "resolution": 768,
    }


def test_fine_script_and_gpu_profile_agree(pipeline_commands):
    script = script_command("Tiger-Fine.sh", "DATA", "COARSE", "FINE", DEVICE="gpu")
    ours = resolved(script, "generation.fine.cli", fine_cli.config_from_args)
    pipeline = resolved(pipeline_commands["fine"], "generation.fine.cli", fine_cli.config_from_args)
    assert ours == pipeline
    assert ours["resolution"] == 512 and ours["gradient_checkpointing"] is True
