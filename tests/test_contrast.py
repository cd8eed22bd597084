"""Attribute-contrast guidance: the contrast words, the pipeline's guidance and the engine's use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from generation.inference.contrast import contrast_text, contrast_values
from generation.inference.engine import GenerationError, SamplingConfig, sampling_identity
from generation.inference.runner import run_generation
from tests.test_inference import fine_folder, request  # noqa: F401  (fixture)

SUPPORT = {
    "composition": ("solid", "mixed", "cystic"),
    "echogenicity": ("markedly hypoechoic", "hypoechoic", "isoechoic", "hyperechoic"),
    "calcifications": ("none", "microcalcifications", "macrocalcifications"),
    "halo": ("yes", "no"),
    "shape": ("wider-than-tall", "taller-than-wide"),
    "margins": ("well-defined", "lobulated"),
}


def test_findings_flip_to_their_farthest_word_and_the_outline_stays():
    asked = {
        "composition": "solid",
        "echogenicity": "hypoechoic",
        "calcifications": "macrocalcifications",
        "halo": "no",
        "shape": "taller-than-wide",
        "margins": "lobulated",
        "size": "medium",
    }
    flipped = contrast_values(asked, SUPPORT)
    assert flipped["composition"] == "cystic"
    assert flipped["echogenicity"] == "hyperechoic"
    assert flipped["calcifications"] == "none"
    assert flipped["halo"] == "yes"
    assert {k: flipped[k] for k in ("shape", "margins", "size")} == {
        "shape": "taller-than-wide",
        "margins": "lobulated",
        "size": "medium",
    }
    back = contrast_values({"calcifications": "none", "echogenicity": "hyperechoic"}, SUPPORT)
    assert back == {"calcifications": "macrocalcifications", "echogenicity": "markedly hypoechoic"}
    # A finding the data states with one word only has nothing to contrast with: kept.
    assert contrast_values({"echogenicity": "hypoechoic"}, {"echogenicity": ("hypoechoic",)}) == {
        "echogenicity": "hypoechoic"
    }
    text = contrast_text("MTC", asked, SUPPORT)
    assert "medullary" in text and "no calcifications" in text and "halo" in text
    assert "macrocalcifications" not in text and "taller-than-wide" in text


def generate(pipe, **kwargs) -> np.ndarray:
    common = dict(
        text_nd=["malignant, medullary, solid, hypoechoic, macrocalcifications"] * 2,
        text_bg=["homogeneous background"] * 2,
        condition_FG=[np.full((64, 64, 3), 255, np.uint8)] * 2,
        condition_BG=[np.full((64, 64, 3), 120, np.uint8)] * 2,
        num_inference_steps=2,
        resolution=64,
        output_type="np",
    )
    generators = [torch.Generator("cpu").manual_seed(s) for s in (1, 2)]
    return np.asarray(pipe(**common, **kwargs, generator=generators).images)


def test_guidance_against_the_prompt_itself_is_no_guidance(fine_folder):  # noqa: F811
    """u + g (c - u) with u = c is c: the contrast pass must read the same branches' texts."""
    from generation.fine.pipeline import TigerFinePipeline

    pipe = TigerFinePipeline.from_pretrained(fine_folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    same = ["malignant, medullary, solid, hypoechoic, macrocalcifications"] * 2
    unguided = generate(pipe, guidance_scale=1.0)
    self_contrast = generate(pipe, guidance_scale=4.0, negative_text_nd=same)
    np.testing.assert_allclose(self_contrast, unguided, atol=1e-4)
    empty = generate(pipe, guidance_scale=4.0)
    other = ["malignant, medullary, cystic, hyperechoic, no calcifications, halo"] * 2
    contrasted = generate(pipe, guidance_scale=4.0, negative_text_nd=other)
    assert np.abs(contrasted - empty).mean() > 1e-3  # a different negative, a different image
    with pytest.raises(ValueError, match="not both"):
        generate(pipe, guidance_scale=4.0, negative_text_nd=other, negative_prompt="x")


def test_engine_records_each_contrast_and_old_folders_keep_their_identity(
    fine_folder,  # noqa: F811
    phantom_dataset,
    tmp_path,
):
    plain = SamplingConfig(num_inference_steps=2, guidance_scale=2.0)
    assert "attribute_contrast" not in sampling_identity(plain)  # folders made before it resume
    sampling = SamplingConfig(num_inference_steps=2, guidance_scale=2.0, attribute_contrast=True)
    assert sampling_identity(sampling)["attribute_contrast"] is True
    out = tmp_path / "gen"
    run_generation(request(fine_folder, phantom_dataset, out, num_images=2, sampling=sampling))
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["negative_text_nd"] and row["negative_text_nd"] != row["text_nd"]
        assert row["negative_text_nd"].split(",")[:2] == row["text_nd"].split(",")[:2]  # label
    plain_out = tmp_path / "plain"
    run_generation(request(fine_folder, phantom_dataset, plain_out, num_images=2))
    a, b = (
        np.asarray(Image.open(sorted((folder / "images").glob("*.png"))[0]), np.int16)
        for folder in (out, plain_out)
    )
    assert np.abs(a - b).mean() > 0.5  # the same job, guided another way
    with pytest.raises(GenerationError, match="replaces --negative-prompt"):
        SamplingConfig(attribute_contrast=True, negative_prompt="blurry").validate()


def test_findings_backgrounds_show_the_prompts_posterior_findings_under_the_new_mask(
    phantom_dataset,
):
    """A shadow or enhancement lives below the nodule, in the background map: a diversify job
    asking for it gets a background whose own nodule had it, and its mask sits where that was."""
    from generation.inference.attributes import AttributeConstraints, record_value
    from generation.inference.masks import MaskBank, load_mask
    from generation.inference.plan import plan_diversify
    from generation.inference.prompts import PromptConfig
    from generation.inference.sources import load_train_source
    from metadata.splits import SplitConfig

    source = load_train_source(phantom_dataset, split_config=SplitConfig())
    by_bg = {str(source.bg_path(r)): r for r in source.records}
    config = PromptConfig(diversity=1.0)  # every calcification word, whatever the class's prior
    jobs = plan_diversify(source, "MTC", 12, 0, AttributeConstraints(), config, "findings")
    plain = plan_diversify(source, "MTC", 12, 0, AttributeConstraints(), config, "any")
    assert [j.attributes for j in jobs] == [j.attributes for j in plain]  # same prompts
    assert all(j.mask_anchor is None for j in plain)
    bank = MaskBank(source, 64)
    matched = 0
    for job in jobs:
        background = by_bg[job.condition_BG]
        assert record_value(background, "calcifications") == job.attributes["calcifications"]
        matched += record_value(background, "composition") == job.attributes["composition"]
        own = load_mask(source.fg_path(background), 64)
        rows, cols = np.nonzero(own)
        assert job.mask_anchor == pytest.approx(
            ((rows.mean() + 0.5) / 64, (cols.mean() + 0.5) / 64), abs=0.02
        )
        drawn = bank.draw(job.mask_request, job.mask_seed, job.mask_anchor).mask
        new_cols = np.nonzero(drawn)[1]
        assert abs(new_cols.mean() - cols.mean()) <= 6  # under the old nodule (64 px frame)
        assert background.case_id in job.source_cases  # the memorization check knows it
    assert matched >= len(jobs) // 2
    with pytest.raises(ValueError, match="background match"):
        plan_diversify(source, "MTC", 2, 0, AttributeConstraints(), config, "nearest")


def test_background_outside_nodule_reaches_the_sampler_and_old_folders_keep_their_identity(
    tmp_path,
):
    from generation.inference.cli import build_parser, request_from_args

    model, dataset = tmp_path / "model", tmp_path / "data"
    model.mkdir(), dataset.mkdir()
    base = ["diversify", "--model", str(model), "--dataset", str(dataset), "--label", "FTC"]
    base += ["--out", str(tmp_path / "out")]
    on = request_from_args(build_parser().parse_args(base))  # diversify's default: on
    assert on.sampling.background_outside_nodule is True
    assert sampling_identity(on.sampling)["background_outside_nodule"] is True
    off = [*base, "--background-outside-nodule", "false"]
    plain = request_from_args(build_parser().parse_args(off))
    assert plain.sampling.background_outside_nodule is False
    assert "background_outside_nodule" not in sampling_identity(plain.sampling)
    reference = request_from_args(build_parser().parse_args(["reference", *base[1:]]))
    assert reference.sampling.background_outside_nodule is False  # not measured there: off
