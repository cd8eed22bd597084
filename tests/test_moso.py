"""MoSo: batched per-sample gradients equal the one-at-a-time loop; the estimator's algebra;
surrogate training resumes exactly; corrupted samples rank at the bottom on a toy pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from generation.filtering import moso_train
from generation.filtering.moso_grads import hook_gradients, loop_gradients, vmap_gradients
from generation.filtering.moso_params import MosoConfig
from generation.filtering.moso_run import moso_scores, partition_indices
from generation.filtering.moso_score import checkpoint_scores, moso_terms
from generation.filtering.moso_surrogate import SurrogateCNN, last_layer_parameters
from generation.filtering.moso_train import train_surrogate


def tiny_model(seed: int = 0) -> SurrogateCNN:
    torch.manual_seed(seed)
    model = SurrogateCNN(num_classes=3, width=4, depth=2)
    model.train()
    model(torch.randn(16, 1, 16, 16))  # non-trivial BatchNorm running statistics
    return model.eval()


@pytest.mark.parametrize("batched_method", [vmap_gradients, hook_gradients])
def test_batched_gradients_equal_loop_gradients(batched_method):
    model = tiny_model()
    images, labels = torch.randn(9, 1, 16, 16), torch.randint(0, 3, (9,))
    for last in (None, 1, 2, 3):
        names = last_layer_parameters(model, last)
        looped = loop_gradients(model, images, labels, names)
        batched = batched_method(model, images, labels, names)
        assert (
            looped.shape
            == batched.shape
            == (9, sum(dict(model.named_parameters())[n].numel() for n in names))
        )
        torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["exact", "first_order"])
def test_batched_scores_equal_loop_scores(form):
    model = tiny_model(1)
    images, labels = torch.randn(11, 1, 16, 16), torch.randint(0, 3, (11,))
    names = last_layer_parameters(model, None)
    looped = checkpoint_scores(model, images, labels, names, form, "loop", chunk_size=4)
    for method in ("vmap", "hooks"):
        batched = checkpoint_scores(model, images, labels, names, form, method, chunk_size=5)
        torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-9)
    assert looped.std() > 0


def test_first_order_is_inner_product_with_mean_gradient_of_the_rest():
    generator = torch.Generator().manual_seed(0)
    grads = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    n = grads.shape[0]
    mean = grads.mean(0)
    first = moso_terms(grads, mean, n, "first_order")
    for i in range(n):
        rest = torch.cat([grads[:i], grads[i + 1 :]]).mean(0)
        expected = (n - 1) / n * rest.dot(grads[i])
        torch.testing.assert_close(first[i], expected)
    exact = moso_terms(grads, mean, n, "exact")
    # the correction terms: checkpoint-level |m|^2 and a penalty on the sample's own |g|^2
    s = float((n - 1) ** 2)
    manual = (2 * n - 3) / s * mean.dot(mean) - (grads**2).sum(1) / s + (2 * n - 4) / s * first
    torch.testing.assert_close(exact, manual)
    with pytest.raises(ValueError, match="at least two"):
        moso_terms(grads[:1], mean, 1, "exact")


def test_partitions_are_disjoint_stratified_and_complete():
    labels = np.array([0] * 10 + [1] * 6 + [2] * 4)
    parts = partition_indices(labels, 2, seed=3)
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(20))
    for part in parts:
        assert abs(np.sum(labels[part] == 0) - 5) <= 1 and np.sum(labels[part] == 2) == 2
    with pytest.raises(ValueError, match="fewer than 2"):
        partition_indices(labels, 15, seed=0)


def toy_pool(seed: int = 0, n_clean: int = 96, n_bad: int = 8):
    """Four classes (a blob in one quadrant each) and `n_bad` copies with a wrong label."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    centres = [(4, 4), (4, 11), (11, 4), (11, 11)]
    blobs = [((yy - cy) ** 2 + (xx - cx) ** 2 < 12).astype(np.float32) for cy, cx in centres]
    images, labels = [], []
    for k in range(n_clean):
        images.append(0.2 + 0.6 * blobs[k % 4] + 0.1 * rng.standard_normal((16, 16)))
        labels.append(k % 4)
    corrupt = []
    for _ in range(n_bad):  # scattered label noise: each copy gets a random other class
        source = int(rng.integers(n_clean))
        images.append(images[source].copy())
        labels.append(int((labels[source] + rng.integers(1, 4)) % 4))
        corrupt.append(len(images) - 1)
    x = torch.tensor(np.stack(images), dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(labels), corrupt


def test_wrongly_labelled_samples_rank_near_the_bottom(tmp_path):
    images, labels, corrupt = toy_pool()
    config = MosoConfig(
        image_size=16, width=4, epochs=8, batch_size=16, lr=0.05, sampled_checkpoints=4, seed=0
    )
    scores = moso_scores(images, labels, 4, config, tmp_path)
    bottom = set(np.argsort(scores)[: len(corrupt)].tolist())
    precision = len(bottom & set(corrupt)) / len(corrupt)
    random_precision = len(corrupt) / len(scores)  # 0.077
    assert precision >= 3 * random_precision, (precision, scores[corrupt], np.median(scores))


@pytest.mark.parametrize("partitions", [1, 2])
def test_scoring_only_some_samples_gives_them_the_same_scores(tmp_path, partitions):
    images, labels, _ = toy_pool(2, n_clean=40, n_bad=4)
    config = MosoConfig(
        image_size=16, width=4, epochs=2, batch_size=16, sampled_checkpoints=2,
        partitions=partitions,
    )  # fmt: skip
    everything = moso_scores(images, labels, 4, config, tmp_path / "all")
    scored = np.zeros(len(labels), dtype=bool)
    scored[::3] = True  # the "synthetic" third; the rest only trains and sets the mean
    some = moso_scores(images, labels, 4, config, tmp_path / "some", scored)
    assert np.isnan(some[~scored]).all()
    np.testing.assert_allclose(some[scored], everything[scored], rtol=1e-5, atol=1e-9)
    assert np.std(some[scored]) > 0


def test_surrogate_training_resumes_exactly(tmp_path, monkeypatch):
    images, labels, _ = toy_pool(1, n_clean=40, n_bad=0)
    config = MosoConfig(image_size=16, width=4, epochs=3, batch_size=16)
    original = moso_train.run_epoch
    calls = []

    def crash_on_third_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(moso_train, "run_epoch", crash_on_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_surrogate(images, labels, 4, config, tmp_path / "resumed", seed=5)
    monkeypatch.setattr(moso_train, "run_epoch", original)
    resumed = train_surrogate(images, labels, 4, config, tmp_path / "resumed", seed=5)
    straight = train_surrogate(images, labels, 4, config, tmp_path / "straight", seed=5)
    assert [c.epoch for c in resumed] == [0, 1, 2]
    assert [c.lr for c in resumed] == [c.lr for c in straight]
    a = load_file(str(resumed[-1].path))
    b = load_file(str(straight[-1].path))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # Nothing pickled: the resume state is safetensors + JSON.
    assert not [p for p in (tmp_path / "resumed").rglob("*") if p.suffix in (".pt", ".pkl")]


def test_hook_gradients_cover_biased_and_strided_layers_and_refuse_unknown_ones():
    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=True),
        torch.nn.BatchNorm2d(3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 4 * 4, 4, bias=False),
    )
    model.train()
    model(torch.randn(8, 2, 8, 8))
    images, labels = torch.randn(5, 2, 8, 8), torch.randint(0, 4, (5,))
    names = [name for name, _ in model.named_parameters()]
    torch.testing.assert_close(
        hook_gradients(model, images, labels, names),
        loop_gradients(model, images, labels, names),
        rtol=1e-5,
        atol=1e-6,
    )
    grouped = torch.nn.Sequential(
        torch.nn.Conv2d(2, 2, 3, groups=2), torch.nn.Flatten(), torch.nn.Linear(72, 2)
    )
    with pytest.raises(NotImplementedError, match="Conv2d"):
        hook_gradients(grouped, images, labels[:5] % 2, ["0.weight"])
