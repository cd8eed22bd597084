"""The offline CLIP tokenizer must give exactly open_clip's (= OpenAI's) ids."""

from __future__ import annotations

import open_clip
import pytest
import torch

from generation.tokenizer import MODEL_MAX_LENGTH, build_clip_tokenizer

CLINICAL_SENTENCES = [
    "malignant, follicular, solid, hypoechoic, taller-than-wide, ill-defined margins, "
    "microcalcifications, large; heterogeneous parenchyma, coarse echotexture",
    "Benign  spongiform nodule, well-defined margins, no calcifications, halo.",
    "wider-than-tall, 12mm x 8 mm, medullary",
    "",
    "solid " * 120,  # longer than 77 tokens: truncated with EOS kept last
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


@pytest.mark.parametrize("text", CLINICAL_SENTENCES)
def test_ids_equal_open_clip(tokenizer, text):
    ours = tokenizer(
        text,
        padding="max_length",
        max_length=MODEL_MAX_LENGTH,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    reference = open_clip.get_tokenizer("ViT-B-32")([text])
    assert torch.equal(ours, reference)


def test_special_tokens_and_length(tokenizer, tmp_path):
    assert tokenizer.model_max_length == MODEL_MAX_LENGTH
    assert len(tokenizer) == 49408
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        49406,
        49407,
        0,
    )
    kept = build_clip_tokenizer(tmp_path / "tok")
    assert (tmp_path / "tok" / "vocab.json").is_file()
    assert (tmp_path / "tok" / "merges.txt").is_file()
    assert kept("taller-than-wide").input_ids == tokenizer("taller-than-wide").input_ids
