"""Shared fixtures: a small phantom dataset and its classifier layout, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 48 phantom frames at 64 px; returns the dataset ROOT."""
    from metadata.importers.phantom import build_phantom_dataset
    from metadata.phantom import PhantomConfig

    root = tmp_path_factory.mktemp("phantom") / "dataset"
    config = PhantomConfig(
        size=64,
        seed=1,
        prevalence={"benign": 0.55, "PTC": 0.15, "FTC": 0.15, "MTC": 0.15},
    )
    build_phantom_dataset(root, n_images=48, config=config)
    return root


@pytest.fixture(scope="session")
def phantom_classifier_layout(
    phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The classifier layout exported from `phantom_dataset`; returns CROOT."""
    from metadata.classifier_export import export_classifier_layout
    from metadata.splits import SplitConfig

    out = tmp_path_factory.mktemp("phantom_cls") / "classifier"
    export_classifier_layout(phantom_dataset, out, SplitConfig(0.2, 0.2, seed=0))
    return out
