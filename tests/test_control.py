"""Foreground/background control measurement on a fake GEN folder made of real phantom frames.

The "generated" images are real held-out phantom frames listed with their own masks and
text_bg, so a segmenter that works must score a high IoU, the shuffled-mask control must score
lower, and the measured background mean must track the requested one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from generation.inference.cli import main as cli_main
from generation.inference.control import (
    ControlConfig,
    NoduleSegmenter,
    derangement,
    iou,
    measure_control,
    real_train_valid,
)
from metadata.records import MetadataError, read_metadata, resolve
from metadata.splits import SplitConfig

SPLIT = SplitConfig(0.2, 0.2, seed=0)


def fake_gen_folder(dataset: Path, out: Path) -> Path:
    """GEN made of the real valid+test frames: file_name/condition_FG relative to GEN."""
    meta_file, train, _ = real_train_valid(dataset, split=SPLIT)
    train_names = {r.file_name for r in train}
    (out / "images").mkdir(parents=True)
    (out / "conditions").mkdir()
    rows = []
    for record in read_metadata(meta_file):
        if record.file_name in train_names or record.synthetic:
            continue
        stem = Path(record.file_name).stem
        shutil.copy(resolve(meta_file, record.file_name), out / "images" / f"{stem}.png")
        shutil.copy(resolve(meta_file, record.condition_FG), out / "conditions" / f"{stem}.png")
        rows.append(
            {
                "file_name": f"images/{stem}.png",
                "condition_FG": f"conditions/{stem}.png",
                "condition_BG": str(resolve(meta_file, record.condition_BG)),
                "text_bg": record.text_bg,
                "attributes": {},
                "resolution": 64,
            }
        )
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return out


def test_derangement_moves_every_index() -> None:
    for n in (2, 3, 10):
        target = derangement(n, seed=n)
        assert sorted(target.tolist()) == list(range(n))
        assert (target != np.arange(n)).all()


@pytest.fixture
def one_thread():
    """One torch thread: the CPU is shared, and spinning threads cost more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_segmenter_learns_a_bright_disc(one_thread) -> None:
    grid = np.mgrid[:32, :32]
    images, masks = [], []
    rng = np.random.default_rng(0)
    for _ in range(24):
        centre = rng.integers(10, 22, 2)
        mask = ((grid[0] - centre[0]) ** 2 + (grid[1] - centre[1]) ** 2) < 36
        images.append(0.3 + 0.4 * mask + 0.05 * rng.standard_normal((32, 32)))
        masks.append(mask)
    x = torch.tensor(np.stack(images), dtype=torch.float32)[:, None]
    y = torch.tensor(np.stack(masks), dtype=torch.float32)[:, None]
    config = ControlConfig(image_size=32, epochs=20, batch_size=8, widths=(8, 16, 32, 32))
    segmenter = NoduleSegmenter(config).fit(x, y)
    found = segmenter.predict_batch(x)
    assert np.mean([iou(f, m) for f, m in zip(found, masks, strict=True)]) > 0.7


def test_control_on_real_frames(phantom_dataset: Path, tmp_path: Path, one_thread) -> None:
    gen = fake_gen_folder(phantom_dataset, tmp_path / "gen")
    splits = tmp_path / "splits.json"
    _, train, valid = real_train_valid(phantom_dataset, split=SPLIT)
    assignments = {r.file_name: {"split": "train"} for r in train}
    assignments.update({r.file_name: {"split": "valid"} for r in valid})
    splits.write_text(json.dumps({"assignments": assignments}), "utf-8")
    command = ["control", "--gen", str(gen), "--dataset", str(phantom_dataset)]
    code = cli_main([*command, "--splits", str(splits), "--epochs", "40", "--cpu-threads", "1"])
    assert code == 0
    report = json.loads((gen / "control.json").read_text("utf-8"))
    n_gen = len((gen / "manifest.jsonl").read_text("utf-8").splitlines())
    assert report["fg_iou"]["n"] == report["fg_iou_shuffled_masks"]["n"] == n_gen
    assert report["segmenter_real_held_out_iou"]["n"] == len(valid)
    assert report["settings"]["n_real_train"] == len(train)
    low, high = report["fg_iou"]["ci95"]
    assert low <= report["fg_iou"]["mean"] <= high
    assert report["fg_iou"]["mean"] > 0.4
    assert report["fg_iou"]["mean"] > report["fg_iou_shuffled_masks"]["mean"] + 0.2
    assert report["bg"]["n"] == n_gen
    assert report["bg"]["pearson_r"] > 0.9  # the requested mean was measured on these frames
    assert report["bg"]["mean_abs_error"] < 5.0
    listed = {row["file_name"] for row in report["per_image"]}
    assert {f"images/{Path(r.file_name).stem}.png" for r in valid} <= listed


def test_missing_manifest_is_a_clear_error(phantom_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="manifest"):
        measure_control(tmp_path, phantom_dataset, config=ControlConfig(epochs=1))


def test_bad_image_size_is_refused(phantom_dataset: Path, tmp_path: Path, capsys) -> None:
    command = ["control", "--gen", str(tmp_path), "--dataset", str(phantom_dataset)]
    code = cli_main([*command, "--image-size", "60"])
    assert code == 2
    assert "multiple of 8" in capsys.readouterr().err


def test_segmenter_cache_fits_once_and_measures_the_same(
    phantom_dataset: Path, tmp_path: Path, one_thread
) -> None:
    gen = fake_gen_folder(phantom_dataset, tmp_path / "gen")
    cache = tmp_path / "segmenter"
    config = ControlConfig(epochs=1)
    fresh = measure_control(gen, phantom_dataset, split=SPLIT, config=config)
    first = measure_control(gen, phantom_dataset, split=SPLIT, config=config, segmenter_cache=cache)
    second = measure_control(
        gen, phantom_dataset, split=SPLIT, config=config, segmenter_cache=cache
    )
    assert not fresh["settings"]["segmenter_from_cache"]
    assert not first["settings"]["segmenter_from_cache"]
    assert second["settings"]["segmenter_from_cache"]
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1
    for key in ("fg_iou", "fg_iou_shuffled_masks", "segmenter_real_held_out_iou", "bg"):
        assert fresh[key] == first[key] == second[key]
    # another config (or other train frames) is another key: fit again, not the old weights
    other = measure_control(
        gen, phantom_dataset, split=SPLIT, config=ControlConfig(epochs=2), segmenter_cache=cache
    )
    assert not other["settings"]["segmenter_from_cache"]
    assert len(list(cache.iterdir())) == 2


def test_segmenter_key_follows_the_train_bytes(tmp_path: Path) -> None:
    from generation.inference.segmenter import segmenter_key

    image, mask = tmp_path / "a.png", tmp_path / "a_mask.png"
    image.write_bytes(b"image")
    mask.write_bytes(b"mask")
    before = segmenter_key(ControlConfig(), [(image, mask)])
    assert segmenter_key(ControlConfig(), [(image, mask)]) == before
    mask.write_bytes(b"mask, redrawn")
    assert segmenter_key(ControlConfig(), [(image, mask)]) != before
    assert segmenter_key(ControlConfig(seed=1), [(image, mask)]) != before
