import numpy as np
import pytest
from PIL import Image

from metadata.importers.phantom import build_phantom_dataset, phantom_samples
from metadata.phantom import PhantomConfig, generate_case, render_frame
from metadata.phantom_priors import DEFAULT_PREVALENCE, blended_priors, class_posterior
from metadata.records import read_metadata, resolve
from metadata.vocabulary import measure_mask


def test_same_seed_same_pixels_and_different_seed_differs():
    config = PhantomConfig(size=64, seed=3)
    first = [s.image for s in phantom_samples(6, config)]
    again = [s.image for s in phantom_samples(6, config)]
    other = [s.image for s in phantom_samples(6, PhantomConfig(size=64, seed=4))]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_recorded_shape_and_size_match_the_mask():
    config = PhantomConfig(size=96, seed=5)
    checked = 0
    for sample in phantom_samples(60, config):
        geometry = measure_mask(sample.mask)
        assert geometry.shape == sample.attributes.shape, sample.stem
        assert geometry.size == sample.attributes.size, sample.stem
        ratio = sample.extra["aspect_ratio"]
        assert (ratio > 1) == (sample.attributes.shape == "taller-than-wide")
        checked += 1
    assert checked == 60


def test_nodule_echogenicity_is_visible_in_pixels():
    """Hypoechoic nodules are darker than their surroundings, hyperechoic ones brighter."""
    config = PhantomConfig(size=128, seed=7, difficulty=0.0)
    contrasts: dict[str, list[float]] = {"hypoechoic": [], "hyperechoic": []}
    for index in range(300):
        case = generate_case(index, config)
        attributes = case.attributes
        if attributes.echogenicity not in contrasts or attributes.composition != "solid":
            continue
        if attributes.calcifications != "none":
            continue
        frame = render_frame(case, config.size, 0)
        inside = frame.image[frame.mask].mean()
        ring = np.zeros_like(frame.mask)
        rows, cols = np.nonzero(frame.mask)
        ring[max(rows.min() - 8, 0) : rows.max() + 8, max(cols.min() - 8, 0) : cols.max() + 8] = (
            True
        )
        outside = frame.image[ring & ~frame.mask].mean()
        contrasts[attributes.echogenicity].append(inside - outside)
    assert len(contrasts["hypoechoic"]) >= 5 and len(contrasts["hyperechoic"]) >= 3
    assert np.mean(contrasts["hypoechoic"]) < -15
    assert np.mean(contrasts["hyperechoic"]) > 5


def test_cases_share_case_id_and_prevalence_makes_rare_classes_rare():
    config = PhantomConfig(size=64, seed=0)
    labels = [generate_case(i, config).label for i in range(1000)]
    for rare in ("FTC", "MTC"):
        assert 0.02 < labels.count(rare) / 1000 < 0.09
    samples = list(phantom_samples(40, config))
    by_case: dict[str, set[str]] = {}
    for sample in samples:
        by_case.setdefault(sample.case_id, set()).add(sample.attributes.label)
    assert all(len(labels) == 1 for labels in by_case.values())
    assert len(by_case) < len(samples)  # some cases have two frames


def test_difficulty_blends_toward_pooled_priors():
    prevalence = {"benign": 0.5, "PTC": 0.5}
    easy = blended_priors("PTC", 0.0, prevalence)["calcifications"]["microcalcifications"]
    hard = blended_priors("PTC", 1.0, prevalence)["calcifications"]["microcalcifications"]
    pooled = blended_priors("benign", 1.0, prevalence)["calcifications"]["microcalcifications"]
    assert easy > hard
    assert hard == pytest.approx(pooled)
    with pytest.raises(ValueError, match="difficulty"):
        blended_priors("PTC", 1.5, prevalence)
    with pytest.raises(ValueError, match="difficulty"):
        blended_priors("PTC", -1.5, prevalence)


def test_negative_difficulty_exaggerates_and_stays_a_distribution():
    prevalence = {"benign": 0.5, "PTC": 0.5}
    textbook = blended_priors("PTC", 0.0, prevalence)
    caricature = blended_priors("PTC", -1.0, prevalence)
    for attribute, distribution in caricature.items():
        assert sum(distribution.values()) == pytest.approx(1.0)
        assert min(distribution.values()) >= 0.0
        assert set(distribution) == set(textbook[attribute])
    micro = "microcalcifications"
    assert caricature["calcifications"][micro] > textbook["calcifications"][micro]


def test_phantom_dataset_files_match_records(phantom_dataset):
    records = read_metadata(phantom_dataset)
    meta_file = phantom_dataset / "init_image" / "metadata.jsonl"
    assert len(records) == 48
    for record in records[:10]:
        image = Image.open(resolve(meta_file, record.file_name))
        mask = np.asarray(Image.open(resolve(meta_file, record.condition_FG)))
        assert image.size == (64, 64)
        assert mask.shape == (64, 64, 3) and set(np.unique(mask)) <= {0, 255}
        assert record.text_nd.startswith("benign" if record.label == "benign" else "malignant")
        assert measure_mask(mask).shape in record.text_nd


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="size"):
        PhantomConfig(size=8)
    with pytest.raises(ValueError, match="unknown phantom classes"):
        PhantomConfig(prevalence={"ATC": 1.0})
    with pytest.raises(ValueError, match="n_images"):
        build_phantom_dataset(tmp_path / "x", n_images=0)


def test_class_posterior_follows_the_attributes_and_the_prevalence():
    ptc_like = {
        "composition": "solid",
        "echogenicity": "hypoechoic",
        "shape": "taller-than-wide",
        "margins": "spiculated",
        "calcifications": "microcalcifications",
        "halo": False,
        "size": "small",
    }
    textbook = class_posterior(ptc_like, 0.0, DEFAULT_PREVALENCE)
    assert sum(textbook.values()) == pytest.approx(1.0)
    assert max(textbook, key=textbook.get) == "PTC"
    assert textbook["PTC"] > DEFAULT_PREVALENCE["PTC"]
    # no signal: the attributes say nothing, the posterior is the prevalence
    flat = class_posterior(ptc_like, 1.0, DEFAULT_PREVALENCE)
    assert flat == pytest.approx(DEFAULT_PREVALENCE)
    # a cystic nodule is benign for sure (no cancer prior allows it); anechoic is no evidence
    cyst = class_posterior(
        {"composition": "cystic", "echogenicity": "anechoic"}, 0.0, DEFAULT_PREVALENCE
    )
    assert cyst["benign"] == pytest.approx(1.0)
