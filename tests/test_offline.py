"""Offline is enforced, not defaulted: with HF_HUB_OFFLINE=0 in the environment and the network
blocked, loading every kind of folder we write tries no connection at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BLOCK_NETWORK = r"""
import json, socket, sys
attempts = []

def refuse(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("network blocked by the test")

socket.socket.connect = lambda self, *a, **k: refuse(*a)
socket.socket.connect_ex = lambda self, *a, **k: refuse(*a)
socket.create_connection = refuse
socket.getaddrinfo = refuse
"""

SCRIPT = (
    BLOCK_NETWORK
    + r"""

import huggingface_hub.constants  # imported first, as a user's own code might
from generation.offline import enforce_offline
enforce_offline(sys.argv[2])
from diffusers import UNet2DConditionModel
from generation.fine.pipeline import TigerFinePipeline
from generation.models import load_pipeline_components

fine = sys.argv[1]
HUB_ID = "runwayml/stable-diffusion-v1-5"
pipe = TigerFinePipeline.from_pretrained(fine)
components = load_pipeline_components(fine + "/coarse")
errors = []
for load in (
    lambda: UNet2DConditionModel.from_pretrained(HUB_ID, subfolder="unet"),
    lambda: load_pipeline_components("stabilityai/stable-diffusion-2-1-base"),
    lambda: TigerFinePipeline.from_pretrained(fine, local_files_only=False),
):
    try:
        load()
    except Exception as error:  # each must fail locally, not reach a hub
        errors.append(type(error).__name__)
print(json.dumps({
    "attempts": attempts,
    "errors": errors,
    "offline_flag": huggingface_hub.constants.is_offline_mode(),
    "hf_home": __import__("os").environ["HF_HOME"],
}))
"""
)


@pytest.fixture(scope="module")
def fine_folder(tmp_path_factory) -> Path:
    import torch

    from generation.fine.pipeline import TigerFinePipeline
    from generation.models import TinyModelConfig, build_tiny_pipeline

    root = tmp_path_factory.mktemp("offline")
    torch.manual_seed(0)
    build_tiny_pipeline(TinyModelConfig(resolution=32)).save_pretrained(root / "sd")
    return TigerFinePipeline.from_coarse(root / "sd").save_pretrained(root / "fine")


def run_blocked(script: str, *args: str, **env: str) -> dict:
    """Run `script` in a fresh interpreter with the hub switched *on* in the environment and the
    network blocked; its last stdout line (JSON) comes back."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", **env}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_connection_is_tried_even_with_offline_switched_off(fine_folder, tmp_path):
    result = run_blocked(SCRIPT, str(fine_folder), str(tmp_path / "run"), HF_HOME="/nope")
    assert result["attempts"] == []
    assert len(result["errors"]) == 3  # hub names fail locally; local_files_only=False refused
    assert result["offline_flag"] is True
    assert result["hf_home"].startswith(str(tmp_path / "run"))


IMPORT_SCRIPT = (
    BLOCK_NETWORK
    + r"""
import runpy
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_module(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print(json.dumps({"attempts": attempts}))
"""
)

ENTRY_POINTS = (
    "scripts.cli",
    "generation.coarse.cli",
    "generation.fine.cli",
    "generation.inference.cli",
    "generation.filtering.cli",
    "generation.autoencoder.cli",
    "classifier.cli",
    "metadata.cli",
)


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_an_entry_point_tries_no_connection_while_it_imports(module):
    """Some libraries reach for the hub as they are imported (bitsandbytes asks the hub about a
    kernel when diffusers imports it), before any `main` could switch the hub clients off."""
    assert run_blocked(IMPORT_SCRIPT, module) == {"attempts": []}
