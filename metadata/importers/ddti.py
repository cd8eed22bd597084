"""DDTI (Pedraza et al. 2015): frames NNN_K.a.jpg, masks NNN_K.b.jpg, label.txt descriptors.

TI-RADS 2-3 is benign, 4a-5 malignant (the usual rule); rows without TI-RADS are imported as
`unlabelled` (useful to the diffusion stages, left out of classifier tasks). Images of one case
(NNN_1, NNN_2, ...) share the case id NNN so splits are by patient.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from metadata.builder import Sample, SkippedSample, build_dataset
from metadata.importers.images import read_grey, read_mask
from metadata.vocabulary import NoduleAttributes

LABEL_FILE = "label.txt"
COLUMNS = ("id", "folder", "composition", "echogenicity", "margins", "calcifications", "tirads")
BENIGN_TIRADS = {"2", "3"}
MALIGNANT_TIRADS = {"4a", "4b", "4c", "5"}
COMPOSITION = {
    "solid": "solid",
    "predominantly-solid": "predominantly solid",
    "predominantly-cystic": "predominantly cystic",
    "cystic": "cystic",
    "spongiform": "spongiform",
}
ECHOGENICITY = {
    "marked-hypoechogenicity": "markedly hypoechoic",
    "hypoechogenicity": "hypoechoic",
    "isoechogenicity": "isoechoic",
    "hyperechogenicity": "hyperechoic",
}
MARGINS = {
    m: m for m in ("well-defined", "microlobulated", "macrolobulated", "ill-defined", "spiculated")
}
CALCIFICATIONS = {
    "non": "none",
    "microcalcification": "microcalcifications",
    "macrocalcification": "macrocalcifications",
}


def label_from_tirads(tirads: str) -> str:
    if tirads in BENIGN_TIRADS:
        return "benign"
    if tirads in MALIGNANT_TIRADS:
        return "malignant"
    return "unlabelled"


def lookup(table: dict[str, str], value: str, column: str, where: str) -> str | None:
    if value in ("", "None"):
        return None
    if value not in table:
        raise ValueError(f"{where}: unknown {column} {value!r}")
    return table[value]


def ddti_samples(source: Path) -> Iterator[Sample | SkippedSample]:
    label_path = source / LABEL_FILE
    if not label_path.is_file():
        raise ValueError(f"{label_path}: DDTI label file not found")
    with open(label_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    for line_no, row in enumerate(rows, start=1):
        where = f"{label_path}:{line_no}"
        if not row or not "".join(row).strip():
            continue
        if len(row) < len(COLUMNS):
            yield SkippedSample(where, f"expected at least {len(COLUMNS)} columns, got {len(row)}")
            continue
        values = dict(zip(COLUMNS, (cell.strip() for cell in row)))
        image_id = values["id"]
        try:
            attributes = NoduleAttributes(
                label=label_from_tirads(values["tirads"]),
                composition=lookup(COMPOSITION, values["composition"], "composition", where),
                echogenicity=lookup(ECHOGENICITY, values["echogenicity"], "echogenicity", where),
                margins=lookup(MARGINS, values["margins"], "margins", where),
                calcifications=lookup(
                    CALCIFICATIONS, values["calcifications"], "calcifications", where
                ),
            )
            image = read_grey(source / f"{image_id}.a.jpg")
            mask = read_mask(source / f"{image_id}.b.jpg")
        except ValueError as error:
            yield SkippedSample(where, str(error))
            continue
        extra = {
            "tirads": values["tirads"] if values["tirads"] != "None" else None,
            "sex": row[7].strip() if len(row) > 7 else None,
            "age": row[8].strip() if len(row) > 8 else None,
        }
        yield Sample(
            stem=f"ddti_{image_id}",
            image=image,
            mask=mask,
            attributes=attributes,
            case_id=f"ddti_{image_id.split('_')[0]}",
            source="ddti",
            extra=extra,
        )


def import_ddti(
    source: str | os.PathLike,
    out_root: str | os.PathLike,
    skip_bad: bool = False,
    workers: int | None = None,
) -> Path:
    label_file = Path(source) / LABEL_FILE
    total = (
        sum(1 for line in label_file.read_text().splitlines() if line.strip())
        if label_file.is_file()
        else None
    )
    return build_dataset(
        ddti_samples(Path(source)), out_root, skip_bad=skip_bad, total=total, workers=workers
    )
