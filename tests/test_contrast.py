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
