"""Domain CLIP: per-image scores on a hand-built case, open_clip save/load, exact resume, and
the clip-score command on a stand-in synthetic manifest."""

from __future__ import annotations

import json
import math

import numpy as np
import open_clip
import pytest
import torch

from generation.filtering import clip_train
from generation.filtering.clip_data import record_pairs
from generation.filtering.clip_model import WEIGHTS_FILE, load_model
from generation.filtering.clip_params import ClipConfig
from generation.filtering.clip_report import compare_paired
from generation.filtering.clip_score import clip_score_from_features, mismatched_texts
from generation.filtering.clip_select import HeldOutScorer, retrieval_auc
from generation.filtering.commands import run_clip_score
from generation.filtering.standin import dataset_as_manifest
from metadata.importers.phantom import build_phantom_dataset
from metadata.records import metadata_path, read_metadata

TINY = dict(
    image_size=32,
    patch_size=8,
    vision_width=64,
    vision_layers=1,
    text_width=32,
    text_layers=1,
    text_heads=2,
    embed_dim=32,
    context_length=24,
    epochs=3,
    batch_size=16,
    warmup_steps=2,
    holdout_fraction=0.25,
    precision="fp32",
    device="cpu",
)


def test_per_image_score_clamps_each_image_not_the_mean():
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 3.0]])
    texts = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])
    scores = clip_score_from_features(images, texts)
    expected = torch.tensor([100.0, 0.0, 0.0, 100.0 / math.sqrt(2.0)])
    torch.testing.assert_close(scores, expected)
    # a mean-then-clamp metric would give max(mean(100, 0, -100, 70.7), 0) = 17.7 for the batch;
    # the per-image clamp keeps the anti-aligned pair at 0 instead of letting it cancel another.
    raw = 100 * torch.nn.functional.cosine_similarity(images, texts)
    assert raw[2] == pytest.approx(-100.0) and scores.mean() > raw.mean()


def test_mismatched_texts_always_differ_and_paired_test_detects_a_gap():
    texts = ["a", "b", "a", "c", "b"]
    control = mismatched_texts(texts, seed=1)
    assert all(t != c for t, c in zip(texts, control))
    with pytest.raises(ValueError, match="two distinct"):
        mismatched_texts(["a", "a"])
    matched = np.array([30.0, 32, 28, 35, 31, 29, 33, 30])
    result = compare_paired(matched, matched - np.array([5.0, 4, 6, 5, 3, 7, 5, 4]))
    assert result["fraction_matched_higher"] == 1.0 and result["wilcoxon_p_greater"] < 0.01
    same = compare_paired(matched, matched[::-1].copy())
    assert same["wilcoxon_p_greater"] > 0.05


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return build_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_images=40, size=64, seed=0)


@pytest.fixture(scope="module")
def trained(phantom, tmp_path_factory):
    run = tmp_path_factory.mktemp("clip_run")
    return clip_train.train_clip(phantom, run, ClipConfig(**TINY)), run


def test_saved_model_loads_through_open_clip(trained):
    folder, _ = trained
    model, _, tokenizer = load_model(folder)
    assert model.visual.image_size == (32, 32) and model.context_length == 24
    assert tokenizer(["benign, solid"]).shape == (1, 24)
    # the open_clip "pretrained=" path: register the saved config, load the weights file
    open_clip.add_model_config(folder / "tiger-clip.json")
    again = open_clip.create_model("tiger-clip", pretrained=str(folder / WEIGHTS_FILE))
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_training_resumes_exactly(phantom, tmp_path, monkeypatch, trained):
    _, straight_run = trained
    original = clip_train.cosine_lr
    steps_per_epoch = math.ceil(
        len(json.loads((straight_run / "split.json").read_text())["train"]) / TINY["batch_size"]
    )

    def crash_in_second_epoch(step, *args):
        if step == steps_per_epoch:
            raise KeyboardInterrupt("simulated crash")
        return original(step, *args)

    monkeypatch.setattr(clip_train, "cosine_lr", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        clip_train.train_clip(phantom, tmp_path, ClipConfig(**TINY))
    assert not (tmp_path / "model").exists()
    monkeypatch.setattr(clip_train, "cosine_lr", original)
    resumed = clip_train.train_clip(phantom, tmp_path, ClipConfig(**TINY))
    a = load_model(resumed)[0].state_dict()
    b = load_model(straight_run / "model")[0].state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def test_clip_score_command_reports_all_three_distributions(trained, tmp_path_factory):
    folder, _ = trained
    synthetic = build_phantom_dataset(tmp_path_factory.mktemp("syn"), n_images=12, size=64, seed=7)
    gen = tmp_path_factory.mktemp("gen")
    dataset_as_manifest(synthetic, gen)
    out = tmp_path_factory.mktemp("scores")
    report = run_clip_score(folder, gen, out)
    rows = [json.loads(line) for line in (out / "clip_scores.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(0.0 <= r["clip_score"] <= 100.0 for r in rows)
    assert report["synthetic_matched"]["n"] == 12
    assert report["real_held_out_matched"]["n"] >= 1
    if "synthetic_mismatched" in report:
        assert "wilcoxon_p_greater" in report["matched_vs_mismatched"]


def test_retrieval_auc_counts_distinct_texts_ranked_below_the_own_one():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # image 0: own text 0 beats both others (1.0); image 1: own text 0 loses to text 1 and ties
    # text 2 (0.25);
    # image 2: own text 1 ties text 0 and beats text 2 (0.75)
    assert retrieval_auc(images, texts, [0, 0, 1]) == pytest.approx((1.0 + 0.25 + 0.75) / 3)
    assert math.isnan(retrieval_auc(images, texts[:1], [0, 0, 0]))


def test_saved_model_is_the_epoch_with_the_best_held_out_auc(phantom, trained):
    folder, run = trained
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    selection = json.loads((run / clip_train.SELECTION_FILE).read_text())
    aucs = [entry["held_out_retrieval_auc"] for entry in log]
    assert selection["selected_epoch"] == int(np.argmax(aucs))
    held = json.loads((run / "split.json").read_text())["held_out"]
    assert selection["held_out_images"] == len(held) > 0
    records = {r.file_name: r for r in read_metadata(metadata_path(phantom))}
    model, _, tokenizer = load_model(folder)
    paths, texts = record_pairs([records[name] for name in held], metadata_path(phantom))
    rescored = HeldOutScorer(paths, texts, model.visual.image_size, tokenizer)(model)
    assert rescored == pytest.approx(max(aucs), abs=1e-5)
