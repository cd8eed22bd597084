"""Synthetic-data quality metrics on cases with a known answer, and the memorization test."""

from __future__ import annotations

import pytest
import torch

from generation.filtering.quality import (
    frechet_distance,
    kernel_distance,
    memorized_fraction,
    precision_recall,
    quality_report,
)


def features(n: int, seed: int, shift: float = 0.0, dim: int = 12) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) + shift


def test_identical_sets_are_at_distance_zero_with_full_precision_and_recall():
    real = features(80, 0)
    assert frechet_distance(real, real.clone()) == pytest.approx(0.0, abs=1e-6)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)


def test_disjoint_sets_have_no_recall_and_a_large_distance():
    real, far = features(80, 0), features(80, 1, shift=20.0)
    precision, recall = precision_recall(real, far)
    assert precision == 0.0 and recall == 0.0
    same_law = frechet_distance(real, features(80, 2))
    assert frechet_distance(real, far) > 100 * same_law
    assert kernel_distance(real, far)[0] > 100 * abs(kernel_distance(real, features(80, 2))[0])


def test_a_collapsed_generator_keeps_precision_and_loses_recall():
    """Mode collapse: every synthetic feature near one real point."""
    real = features(100, 0)
    collapsed = real[:1] + 0.01 * features(100, 3)
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.2


def test_copies_of_train_images_are_flagged_as_memorized_and_new_samples_are_not():
    train, held = features(60, 0), features(40, 1)
    flagged, threshold = memorized_fraction(train, held, train[:10] + 1e-4)
    assert flagged == 1.0 and threshold > 0
    assert memorized_fraction(train, held, features(40, 5))[0] < 0.2


def test_report_gives_real_vs_real_reference_and_every_mode():
    train, held = features(50, 0), features(30, 1)
    report = quality_report(train, held, {"diversify": features(20, 2), "one": features(1, 3)})
    assert set(report["modes"]) == {"diversify"}  # a set of one image has no distribution
    assert report["real_vs_real"]["frechet"] > 0 and report["n_held_out"] == 30
    row = report["modes"]["diversify"]
    assert set(row) >= {"vs_train", "vs_held_out", "memorized_fraction"}
    with pytest.raises(ValueError, match="at least 2"):
        quality_report(train, held[:1], {})


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """torch-fidelity's InceptionV3 architecture with random weights, as a user's .safetensors
    (the real file cannot be downloaded here); its __init__ loads weights, so it is given an
    empty dict once and the loading is skipped."""
    pytest.importorskip("torch_fidelity")
    from safetensors.torch import save_file
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    folder = tmp_path_factory.mktemp("inception")
    empty = folder / "empty.pt"
    torch.save({}, empty)
    original = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, state: None
    try:
        torch.manual_seed(0)
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], str(empty))
    finally:
        FeatureExtractorInceptionV3.load_state_dict = original
    path = folder / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return path


def test_inception_distances_from_a_local_weights_file(random_inception_weights, tmp_path):
    import numpy as np
    from PIL import Image

    from generation.filtering.inception import (
        inception_features,
        inception_network,
        safe_tensor_copy,
    )

    rng = np.random.default_rng(0)
    paths = []
    for index in range(12):
        shade = 40 if index < 6 else 200  # two kinds of image
        pixels = np.clip(rng.normal(shade, 20, (32, 32)), 0, 255).astype(np.uint8)
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    network = inception_network(safe_tensor_copy(random_inception_weights, tmp_path / "cache"))
    dark, light = inception_features(network, paths[:6]), inception_features(network, paths[6:])
    assert dark.shape == (6, 2048)
    assert frechet_distance(dark, dark) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(dark, light) > 10 * frechet_distance(dark[:3], dark[3:])


def test_inception_weights_that_would_run_code_are_refused(tmp_path):
    from generation.filtering.inception import safe_tensor_copy

    class Payload:
        def __reduce__(self):
            return (print, ("this would run",))

    pickled = tmp_path / "evil.pth"
    torch.save({"weight": Payload()}, pickled)
    with pytest.raises(ValueError, match="not a plain weights file"):
        safe_tensor_copy(pickled, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_blocked_distances_give_the_unblocked_answers(monkeypatch):
    """Memory stays O(block x set) at 30k x 40k; the answers must not depend on the block."""
    from generation.filtering import quality

    real, synthetic, held = features(70, 0), features(50, 1, shift=0.5), features(30, 2)
    whole = (precision_recall(real, synthetic), memorized_fraction(real, held, synthetic))
    monkeypatch.setattr(quality, "BLOCK", 7)
    assert (precision_recall(real, synthetic), memorized_fraction(real, held, synthetic)) == whole
