"""Evaluation of generated images: the attribute features, the probe and the memorization check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generation.inference.agreement import (
    AttributeProbe,
    agreement,
    nodule_features,
    word_control,
)
from generation.inference.attributes import AttributeConstraints, AttributeStats
from generation.inference.memorization import TrainIndex, check_images, ssim
from generation.inference.prompts import PromptConfig, PromptSampler
from metadata.records import MetadataRecord


def speckle_frame(rng, inside_level: float, size: int = 64, tall: bool = False):
    """A noisy frame with an elliptic nodule darker or brighter than the tissue around it."""
    y, x = np.mgrid[:size, :size]
    a, b = (14, 8) if tall else (8, 14)
    mask = ((y - 32) / a) ** 2 + ((x - 32) / b) ** 2 <= 1
    image = rng.normal(120, 12, (size, size))
    image[mask] = rng.normal(inside_level, 12, mask.sum())
    return np.clip(image, 0, 255), mask


def test_features_read_echogenicity_and_shape():
    rng = np.random.default_rng(0)
    features, echo, shape = [], [], []
    for i in range(40):
        dark, tall = i % 2 == 0, (i // 2) % 2 == 0
        image, mask = speckle_frame(rng, 60 if dark else 175, tall=tall)
        features.append(nodule_features(image, mask))
        echo.append("hypoechoic" if dark else "hyperechoic")
        shape.append("taller-than-wide" if tall else "wider-than-tall")
    features = np.stack(features)
    # Inside-minus-ring median (in ring spreads) has the sign of the echogenicity.
    assert all((f[2] < 0) == (e == "hypoechoic") for f, e in zip(features, echo, strict=True))
    probe = AttributeProbe().fit(
        features[:30],
        {"echogenicity": echo[:30], "shape": shape[:30]},
        features[30:],
        {"echogenicity": echo[30:], "shape": shape[30:]},
    )
    assert probe.held_out_accuracy["echogenicity"]["accuracy"] == 1.0
    report = agreement(probe, features[30:], {"echogenicity": echo[30:], "shape": shape[30:]})
    assert report["echogenicity"]["agreement"] == 1.0
    assert report["echogenicity"]["shuffled_prompt_control"] < 0.8
    flipped = ["hyperechoic" if e == "hypoechoic" else "hypoechoic" for e in echo[30:]]
    assert (
        agreement(probe, features[30:], {"echogenicity": flipped})["echogenicity"]["agreement"]
        == 0.0
    )


def test_memorization_flags_copies_not_new_images(tmp_path: Path):
    rng = np.random.default_rng(1)
    train = []
    for i in range(6):
        image, _ = speckle_frame(rng, 60 + 20 * i)
        path = tmp_path / f"train{i}.png"
        Image.fromarray(image.astype(np.uint8)).save(path)
        train.append(path)
    index = TrainIndex(train, 64, cases=[f"case{i}" for i in range(6)])
    grey = np.asarray(Image.open(train[3]), dtype=np.float64)
    assert ssim(grey, grey) == pytest.approx(1.0)
    copy = tmp_path / "copy.png"
    Image.fromarray(np.clip(grey + rng.normal(0, 2, grey.shape), 0, 255).astype(np.uint8)).save(
        copy
    )
    new = tmp_path / "new.png"
    Image.fromarray(speckle_frame(rng, 90)[0].astype(np.uint8)).save(new)
    rows, summary = check_images(index, [copy, new], threshold=0.6, references=[None, None])
    assert rows[0]["near_copy"] and rows[0]["nearest"] == str(train[3])
    assert not rows[1]["near_copy"] and rows[1]["ssim"] < 0.6
    assert summary["fraction_flagged"] == 0.5 == summary["fraction_flagged_unexplained"]
    assert summary["fraction_duplicates"] == 0.5
    # The same copy made from case3's own conditions is flagged but explained by them.
    _, conditioned = check_images(index, [copy], 0.6, [None], source_cases=[["case3"]])
    assert conditioned["fraction_flagged"] == 1.0
    assert conditioned["fraction_flagged_unexplained"] == 0.0


def record(label: str, **attributes) -> MetadataRecord:
    return MetadataRecord("x.png", "fg.png", "bg.png", "t", "", label=label, attributes=attributes)


def test_prompt_sampler_follows_statistics_constraints_and_prefixes():
    records = [record("FTC", echogenicity="isoechoic", shape="wider-than-tall")] * 9
    records += [record("FTC", echogenicity="hypoechoic", shape="taller-than-wide")]
    records += [record("benign", echogenicity="hyperechoic", shape="wider-than-tall")]
    stats = AttributeStats.from_records(records, "FTC")
    sampler = PromptSampler(stats, AttributeConstraints(), PromptConfig())
    draws = sampler.combinations(400, seed=0)
    share = np.mean([d["echogenicity"] == "isoechoic" for d in draws])
    assert 0.8 < share < 0.95  # 9.5 / 10.5 with the pseudo-count
    assert {d["echogenicity"] for d in draws} <= {"isoechoic", "hypoechoic"}  # subtype support
    assert sampler.combinations(50, seed=0) == draws[:50]
    constrained = PromptSampler(
        stats,
        AttributeConstraints.from_cli(["shape=taller-than-wide"], ["echogenicity=isoechoic"]),
        PromptConfig(support="dataset"),
    )
    for draw in constrained.combinations(50, seed=1):
        assert draw["shape"] == "taller-than-wide" and draw["echogenicity"] != "isoechoic"
    grid = PromptSampler(stats, AttributeConstraints(), PromptConfig(strategy="grid"))
    cells = {tuple(sorted(d.items())) for d in grid.combinations(4, seed=0)}
    assert len(cells) == 4  # 2 echogenicities x 2 shapes, each once
    pushed = PromptSampler(stats, AttributeConstraints(), PromptConfig(novelty_candidates=8))
    novel = np.mean([d["echogenicity"] == "isoechoic" for d in pushed.combinations(400, 0)])
    assert novel < share  # the push favours the under-represented combinations


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of one pair, written out from Wang et al. 2004 with the same Gaussian window."""
    from scipy import ndimage

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = ndimage.gaussian_filter(a, 1.5), ndimage.gaussian_filter(b, 1.5)
    var_a = ndimage.gaussian_filter(a * a, 1.5) - mu_a**2
    var_b = ndimage.gaussian_filter(b * b, 1.5) - mu_b**2
    cov = ndimage.gaussian_filter(a * b, 1.5) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(value.mean())


def test_block_search_finds_what_a_one_image_search_finds(tmp_path: Path):
    from generation.inference.memorization import embed, load_grey

    rng = np.random.default_rng(2)
    train = []
    for i in range(30):
        path = tmp_path / f"train{i}.png"
        Image.fromarray(speckle_frame(rng, 40 + 6 * i, tall=i % 2 == 0)[0].astype(np.uint8)).save(
            path
        )
        train.append(path)
    index = TrainIndex(train, 64, top_k=3)
    assert index.images.dtype == np.uint8  # an eighth of float64's memory
    greys = [speckle_frame(rng, 50 + 9 * i)[0].round() for i in range(12)]
    found = index.nearest_many(greys)
    for grey, near in zip(greys, found, strict=True):
        cosines = np.array([embed(load_grey(p, 64)) @ embed(grey) for p in train])
        top = np.argsort(-cosines)[:3]
        scores = [reference_ssim(grey, load_grey(train[i], 64)) for i in top]
        assert near.index == top[int(np.argmax(scores))]
        assert near.ssim == pytest.approx(max(scores), abs=1e-12)
        assert index.nearest(grey).index == near.index


def test_word_control_tells_a_word_the_generator_ignores_from_one_it_follows():
    values = ("hypoechoic", "isoechoic", "hyperechoic")
    jobs = [f"job{i}" for i in range(12)]
    # Ignored: one image per job whatever the word, read as one value (which varies by job).
    ignored = {job: dict.fromkeys(values, values[i % 3]) for i, job in enumerate(jobs)}
    followed = {job: {v: v for v in values} for job in jobs}
    contrary = {job: {v: values[(values.index(v) + 1) % 3] for v in values} for job in jobs}

    none = word_control(ignored)
    assert none["balanced_agreement"] == pytest.approx(1 / 3) == pytest.approx(none["chance"])
    assert (none["jobs_above_one_hit"], none["jobs_below_one_hit"], none["p_sign"]) == (0, 0, 1.0)
    full = word_control(followed)
    assert full["balanced_agreement"] == 1.0 and full["ci95"][0] > full["chance"]
    assert full["jobs_above_one_hit"] == 12 and full["p_sign"] < 0.001
    against = word_control(contrary)
    assert against["balanced_agreement"] == 0.0 and against["jobs_below_one_hit"] == 12


def test_word_control_needs_the_same_versions_for_every_job():
    reads = {"a": {"x": "x", "y": "y"}, "b": {"x": "x"}}
    with pytest.raises(ValueError, match="same number"):
        word_control(reads)


def test_fixing_one_word_leaves_every_other_word_of_each_draw_unchanged():
    """The counterfactual versions of `benchmarks.attribute_control` pair on this."""
    records = [record("FTC", echogenicity="isoechoic", shape="wider-than-tall", halo=True)] * 5
    records += [record("FTC", echogenicity="hypoechoic", shape="taller-than-wide", halo=False)] * 4
    stats = AttributeStats.from_records(records, "FTC")
    versions = [
        PromptSampler(
            stats, AttributeConstraints.from_cli([f"echogenicity={v}"], []), PromptConfig()
        ).combinations(40, seed=3)
        for v in ("isoechoic", "hypoechoic", "hyperechoic")
    ]
    others = [[{k: v for k, v in d.items() if k != "echogenicity"} for d in vs] for vs in versions]
    assert others[0] == others[1] == others[2]
    assert len({tuple(sorted(d.items())) for d in others[0]}) > 1  # the other words do vary
    assert {d["echogenicity"] for d in versions[2]} == {"hyperechoic"}
