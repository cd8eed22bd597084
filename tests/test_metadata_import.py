"""Importers, text composition, atomic builds and datasets.load_dataset compatibility."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metadata.background import BackgroundStats, compose_text_bg, measure_background
from metadata.builder import Sample, build_dataset
from metadata.importers.ddti import import_ddti
from metadata.importers.generic import import_generic
from metadata.importers.tiger import import_tiger_folder
from metadata.records import MetadataError, read_metadata
from metadata.vocabulary import NoduleAttributes, compose_text_nd, measure_mask


def test_text_nd_has_fixed_vocabulary_and_order():
    attributes = NoduleAttributes(
        label="PTC",
        composition="solid",
        echogenicity="hypoechoic",
        shape="taller-than-wide",
        margins="spiculated",
        calcifications="microcalcifications",
        size="medium",
    )
    expected = (
        "malignant, papillary, solid, hypoechoic, taller-than-wide, spiculated margins, "
        "microcalcifications, medium"
    )
    assert compose_text_nd(attributes) == expected
    with pytest.raises(ValueError, match="unknown margins"):
        NoduleAttributes(label="benign", margins="fuzzy")


def test_text_bg_numbers_then_words():
    text = compose_text_bg(BackgroundStats(145.819221, 51.008308, 2.096069))
    assert text == "145.819221, 51.008308, 2.096069, bright, high contrast, coarse texture"


def test_background_grain_grows_with_speckle_size():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    noise = rng.normal(size=(128, 128))
    mask = np.zeros((128, 128), bool)
    mask[60:70, 60:70] = True
    fine = measure_background(np.clip(128 + 30 * noise, 0, 255), mask)
    blurred = ndimage.gaussian_filter(noise, 2.0)
    coarse = measure_background(np.clip(128 + 30 * blurred / blurred.std(), 0, 255), mask)
    assert coarse.grain > 1.5 * fine.grain
    assert fine.words()[2] == "fine texture" and coarse.words()[2] == "coarse texture"


def write_fake_ddti(folder, rows):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for image_id, *_ in rows:
        image = rng.integers(20, 200, size=(63, 100, 3), dtype=np.uint8)
        mask = np.zeros((63, 100), np.uint8)
        mask[20:35, 30:60] = 255
        Image.fromarray(image).save(folder / f"{image_id}.a.jpg")
        Image.fromarray(mask).save(folder / f"{image_id}.b.jpg")
    with open(folder / "label.txt", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_ddti_import_maps_tirads_and_descriptors(tmp_path):
    rows = [
        [
            "10_1",
            "bening",
            "solid",
            "hypoechogenicity",
            "well-defined",
            "microcalcification",
            "4c",
            "F",
            "58",
        ],
        [
            "10_2",
            "bening",
            "solid",
            "hypoechogenicity",
            "well-defined",
            "microcalcification",
            "4c",
            "F",
            "58",
        ],
        ["11_1", "maling", "spongiform", "isoechogenicity", "ill-defined", "non", "3", "M", "40"],
        ["12_1", "na", "None", "None", "None", "None", "None", "F", "33"],
    ]
    write_fake_ddti(tmp_path / "ddti", rows)
    records = read_metadata(import_ddti(tmp_path / "ddti", tmp_path / "out"))
    by_name = {r.file_name: r for r in records}
    assert by_name["ddti_10_1.png"].label == "malignant"
    assert by_name["ddti_10_1.png"].case_id == by_name["ddti_10_2.png"].case_id == "ddti_10"
    assert by_name["ddti_11_1.png"].text_nd == (
        "benign, spongiform, isoechoic, wider-than-tall, ill-defined margins, "
        "no calcifications, large"
    )
    assert by_name["ddti_12_1.png"].label == "unlabelled"
    assert by_name["ddti_12_1.png"].attributes["tirads"] is None


def test_ddti_missing_image_stops_without_writing_or_is_skipped(tmp_path):
    rows = [
        ["10_1", "na", "solid", "hypoechogenicity", "well-defined", "non", "4a", "F", "58"],
        ["11_1", "na", "solid", "hypoechogenicity", "well-defined", "non", "2", "F", "58"],
    ]
    write_fake_ddti(tmp_path / "ddti", rows)
    (tmp_path / "ddti" / "11_1.b.jpg").unlink()
    with pytest.raises(ValueError, match=r"label.txt:2: .*11_1.b.jpg: file not found"):
        import_ddti(tmp_path / "ddti", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    import_ddti(tmp_path / "ddti", tmp_path / "out", skip_bad=True)
    report = json.loads((tmp_path / "out" / "skipped.json").read_text())
    assert len(report["skipped"]) == 1 and "11_1.b.jpg" in report["skipped"][0]["problem"]
    assert len(read_metadata(tmp_path / "out")) == 1


def test_failed_rebuild_keeps_the_previous_dataset(tmp_path):
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:25] = True
    good = Sample(
        "a", np.full((40, 40), 100, np.uint8), mask, NoduleAttributes(label="benign"), "a", "t"
    )
    build_dataset([good], tmp_path / "ds")
    before = (tmp_path / "ds" / "init_image" / "metadata.jsonl").read_text()
    empty = Sample(
        "b",
        np.full((40, 40), 100, np.uint8),
        np.zeros((40, 40), bool),
        NoduleAttributes(label="benign"),
        "b",
        "t",
    )
    with pytest.raises(ValueError, match="t:b: empty nodule mask"):
        build_dataset([good, empty], tmp_path / "ds")
    assert (tmp_path / "ds" / "init_image" / "metadata.jsonl").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_generic_csv_import(tmp_path):
    image = np.full((50, 60), 90, np.uint8)
    mask = np.zeros((50, 60), np.uint8)
    mask[10:40, 25:35] = 255
    Image.fromarray(image).save(tmp_path / "x.png")
    Image.fromarray(mask).save(tmp_path / "x_mask.png")
    (tmp_path / "attrs.csv").write_text(
        "image,mask,label,case_id,echogenicity,halo\nx.png,x_mask.png,FTC,p1,isoechoic,yes\n"
    )
    record = read_metadata(import_generic(tmp_path / "attrs.csv", tmp_path / "out"))[0]
    assert record.text_nd == "malignant, follicular, isoechoic, taller-than-wide, halo, large"
    assert record.case_id == "p1"
    (tmp_path / "bad.csv").write_text("image,label\nx.png,FTC\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column"):
        import_generic(tmp_path / "bad.csv", tmp_path / "out2")


@pytest.mark.parametrize("text_bg", ["145.819221, 51.008308, 2.096069", "dark, low contrast"])
def test_tiger_style_folder_with_legacy_keys(phantom_dataset, tmp_path, text_bg):
    source = tmp_path / "tiger"
    shutil.copytree(phantom_dataset, source)
    meta = source / "init_image" / "metadata.jsonl"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    legacy = []
    for row in rows:
        legacy.append(
            {
                "file_name": row["file_name"],
                "condition_nd": row["condition_FG"],
                "condition_bg": row["condition_BG"],
                "text_nd": row["text_nd"],
                "text_bg": text_bg,
            }
        )
    meta.write_text("".join(json.dumps(r) + "\n" for r in legacy))
    records = read_metadata(import_tiger_folder(source, tmp_path / "out"))
    assert len(records) == len(rows)
    first = records[0]
    assert first.label == rows[0]["label"]
    parts = first.text_bg.split(", ")
    assert [float(p) for p in parts[:3]] == first.bg_stats
    if text_bg[0].isdigit():  # numbers only: ours three words follow the given numbers
        assert parts[:3] == ["145.819221", "51.008308", "2.096069"]
        assert len(parts) == 6 and parts[3] in ("bright", "dark")
    else:  # the user's words are kept, measured numbers in front
        assert parts[3:] == ["dark", "low contrast"]


def test_measure_mask_refuses_empty():
    with pytest.raises(ValueError, match="empty mask"):
        measure_mask(np.zeros((5, 5)))


def test_huggingface_imagefolder_reads_the_dataset(phantom_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    from datasets import load_dataset

    data = load_dataset(
        "imagefolder",
        data_dir=str(phantom_dataset / "init_image"),
        split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    assert len(data) == 48
    assert {"image", "condition_FG", "condition_BG", "text_nd", "text_bg"} <= set(data.column_names)
    assert data[0]["image"].size == (64, 64)


def authors_sample(phantom_dataset: Path, parent: Path) -> Path:
    """A folder shaped like the Tiger authors' sample: metadata under `training data/
    init_image/`, condition paths relative to the folder above the dataset, their own words,
    a `.pngg` typo and a `.jpg` name for a `.png` mask."""
    source = read_metadata(phantom_dataset)[:7]
    root = parent / "training data"
    for folder in ("init_image", "condition_FG", "condition_BG"):
        (root / folder).mkdir(parents=True)
    texts = [
        "malignant, papillary nodule, irregular, solid, heterogeneous, hypoechoic, large",
        "papillary nodule, irregular, solid, unclear, wider-than-tall",
        "malignant, medullary nodule,",
        "papillary",
        "follicular",
        "follicular",
        "papillary",
    ]
    rows = []
    for index, (record, text_nd) in enumerate(zip(source, texts)):
        stem = f"frame{index}"
        image_name = f"{stem}.jpg" if index == 2 else f"{stem}.png"
        with Image.open(phantom_dataset / "init_image" / record.file_name) as image:
            image.convert("RGB").save(root / "init_image" / image_name)
        for key, folder in (("condition_FG", "condition_FG"), ("condition_BG", "condition_BG")):
            shutil.copy(
                (phantom_dataset / "init_image" / getattr(record, key)).resolve(),
                root / folder / f"{stem}.png",
            )
        fg_name = f"{stem}.jpg" if index == 2 else f"{stem}.png"
        bg_name = f"{stem}.pngg" if index == 1 else f"{stem}.png"
        rows.append(
            {
                "file_name": image_name,
                "condition_nd": f"training data/condition_FG/{fg_name}",
                "condition_bg": f"training data/condition_BG/{bg_name}",
                "text_nd": text_nd,
                "text_bg": "sonogram longitudinal plane, less definition, less detail, bright",
            }
        )
    (root / "init_image" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_authors_sample_folder_imports(phantom_dataset, tmp_path, capsys):
    from metadata.cli import main as metadata_main
    from metadata.validate import validate_dataset

    source = authors_sample(phantom_dataset, tmp_path / "dataset")
    with pytest.raises(MetadataError, match=r"metadata\.jsonl:2: condition_BG .*frame1\.pngg"):
        import_tiger_folder(source, tmp_path / "strict")
    out = tmp_path / "imported"
    assert metadata_main(["tiger", "--src", str(source), "--out", str(out), "--skip-bad"]) == 0
    report = capsys.readouterr().err
    assert "metadata.jsonl:2:" in report and "other extension: condition_BG/frame1.png" in report
    assert "metadata.jsonl:3:" in report and "other extension: condition_FG/frame2.png" in report
    assert "2 input(s) skipped" in report
    records = read_metadata(out)
    assert [r.label for r in records] == ["PTC", "PTC", "FTC", "FTC", "PTC"]
    assert records[0].text_nd.startswith("malignant, papillary nodule, irregular")
    parts = records[0].text_bg.split(", ")
    assert [float(p) for p in parts[:3]] == records[0].bg_stats
    assert parts[3:] == ["sonogram longitudinal plane", "less definition", "less detail", "bright"]
    validate_dataset(out)  # the authors' words are declared in the dataset's vocabulary
    meta = out / "init_image" / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    row = json.loads(lines[0])
    row["text_nd"] += ", glowng"
    meta.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    with pytest.raises(MetadataError, match=r"metadata\.jsonl:1: .*\['glowng'\]"):
        validate_dataset(out)
