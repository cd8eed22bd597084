"""`python -m metadata.cli` / `tiger-metadata`: build, import, validate and export datasets."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from generation.offline import enforce_offline
from metadata.records import MetadataError


def parse_prevalence(text: str) -> dict[str, float]:
    """'benign=0.7,FTC=0.1' -> {'benign': 0.7, 'FTC': 0.1}."""
    try:
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CLASS=WEIGHT,..., got {text!r}") from None


LABELS_HELP = (
    "label-set JSON: negative, positives, rare, lesion_free, words, attribute_words "
    "(metadata/labelset.py; default: thyroid benign/PTC/FTC/MTC/malignant)"
)
SKIP_HELP = "leave bad inputs out (listed in OUT/skipped.json) instead of stopping"
CONFLICTS_HELP = (
    "leave out groups of near-identical frames filed under different labels (listed in "
    "OUT/duplicate_cases.json) instead of refusing the import"
)
WORKERS_HELP = "processes for the import (default: the CPUs, at most 8; 1: no pool)"


def add_import_options(parser: argparse.ArgumentParser) -> None:
    """What the importers of a user's own data share: label set, bad inputs, conflicts, pool."""
    parser.add_argument("--labels", type=Path, default=None, help=LABELS_HELP)
    parser.add_argument("--skip-bad", action="store_true", help=SKIP_HELP)
    parser.add_argument("--drop-conflicts", action="store_true", help=CONFLICTS_HELP)
    parser.add_argument("--workers", type=int, default=None, help=WORKERS_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiger-metadata", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    from metadata import external_test as external_doc

    phantom = commands.add_parser("phantom", help="render the built-in ultrasound phantom")
    phantom.add_argument("--out", type=Path, required=True)
    phantom.add_argument("--n-images", type=int, default=1000)
    phantom.add_argument("--size", type=int, default=128)
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--difficulty", type=float, default=None)
    phantom.add_argument(
        "--prevalence", type=parse_prevalence, default=None, help="e.g. benign=0.7,FTC=0.1,..."
    )

    external = commands.add_parser(
        "external-test",
        help="render an independent phantom as a test-only classifier layout",
        description=external_doc.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    external.add_argument("--out", type=Path, required=True)
    external.add_argument("--n-images", type=int, default=3000)
    external.add_argument("--size", type=int, default=128)
    external.add_argument(
        "--seed", type=int, required=True, help="phantom seed (the pipeline: run seed + 10000)"
    )
    external.add_argument("--difficulty", type=float, default=None)
    external.add_argument(
        "--prevalence", type=parse_prevalence, default=None, help="e.g. benign=0.7,FTC=0.1,..."
    )

    ddti = commands.add_parser("ddti", help="import DDTI (../shared/data/ddti layout)")
    ddti.add_argument("--src", type=Path, required=True)
    ddti.add_argument("--out", type=Path, required=True)
    ddti.add_argument("--skip-bad", action="store_true", help=SKIP_HELP)
    ddti.add_argument("--workers", type=int, default=None, help=WORKERS_HELP)

    from metadata.importers import folders as folders_doc
    from metadata.importers import generic as generic_doc

    generic = commands.add_parser(
        "generic",
        help="import images + masks + a CSV (one row per image)",
        description=generic_doc.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generic.add_argument("--csv", type=Path, required=True, help="the CSV (paths relative to it)")
    generic.add_argument("--out", type=Path, required=True, help="the dataset folder to write")
    add_import_options(generic)

    folders = commands.add_parser(
        "folders",
        help="import class folders: ROOT/<class>/NAME.png + NAME_mask*.png",
        description=folders_doc.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    folders.add_argument("--root", type=Path, required=True, help="ROOT holding one folder/class")
    folders.add_argument("--out", type=Path, required=True, help="the dataset folder to write")
    add_import_options(folders)
    folders.add_argument("--negative", default=None, help="the negative class (e.g. benign)")
    folders.add_argument(
        "--lesion-free", default=None, help="the class whose frames have no lesion (e.g. normal)"
    )
    folders.add_argument(
        "--rare", nargs="+", default=None, help="positives to augment (default: every positive)"
    )

    tiger = commands.add_parser("tiger", help="import an existing Tiger-style folder")
    tiger.add_argument("--src", type=Path, required=True)
    tiger.add_argument("--out", type=Path, required=True)
    tiger.add_argument("--skip-bad", action="store_true")

    validate = commands.add_parser("validate", help="check a dataset folder")
    validate.add_argument("dataset", type=Path)
    validate.add_argument("--skip-bad", action="store_true")
    validate.add_argument("--report", type=Path, default=None)

    export = commands.add_parser("export-classifier", help="write SUBTYPE/{train,valid,test}/{0,1}")
    export.add_argument("dataset", type=Path)
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--valid-fraction", type=float, default=0.15)
    export.add_argument("--test-fraction", type=float, default=0.15)
    export.add_argument("--splits", type=Path, default=None, help="reuse a splits.json")

    subset = commands.add_parser("subset", help="only the cases of some splits (train only)")
    subset.add_argument("dataset", type=Path)
    subset.add_argument("--splits", type=Path, required=True, help="classifier splits.json")
    subset.add_argument("--out", type=Path, required=True)
    subset.add_argument("--keep", nargs="+", default=["train"], choices=["train", "valid", "test"])
    subset.add_argument("--no-unassigned", action="store_true", help="drop unlabelled records")

    grid = commands.add_parser("grid", help="picture grid of samples per class")
    grid.add_argument("dataset", type=Path)
    grid.add_argument("--out", type=Path, required=True)
    grid.add_argument("--per-class", type=int, default=6)
    grid.add_argument("--tile", type=int, default=128)
    return parser


def run(args: argparse.Namespace) -> str:
    if args.command in ("phantom", "external-test"):
        from metadata.phantom import PhantomConfig

        options: dict = {"size": args.size, "seed": args.seed}
        if args.difficulty is not None:
            options["difficulty"] = args.difficulty
        if args.prevalence is not None:
            options["prevalence"] = args.prevalence
        config = PhantomConfig(**options)
        if args.command == "external-test":
            from metadata.external_test import build_external_test

            return str(build_external_test(args.out, args.n_images, config))
        from metadata.importers.phantom import build_phantom_dataset

        return str(build_phantom_dataset(args.out, args.n_images, config=config))
    if args.command == "ddti":
        from metadata.importers.ddti import import_ddti

        return str(import_ddti(args.src, args.out, skip_bad=args.skip_bad, workers=args.workers))
    if args.command == "generic":
        from metadata.importers.generic import import_generic

        return str(
            import_generic(
                args.csv,
                args.out,
                skip_bad=args.skip_bad,
                labels_file=args.labels,
                drop_conflicts=args.drop_conflicts,
                workers=args.workers,
            )
        )
    if args.command == "folders":
        from metadata.importers.folders import import_folders

        return str(
            import_folders(
                args.root,
                args.out,
                labels_file=args.labels,
                negative=args.negative,
                lesion_free=args.lesion_free,
                rare=args.rare,
                skip_bad=args.skip_bad,
                drop_conflicts=args.drop_conflicts,
                workers=args.workers,
            )
        )
    if args.command == "tiger":
        from metadata.importers.tiger import import_tiger_folder

        return str(import_tiger_folder(args.src, args.out, skip_bad=args.skip_bad))
    if args.command == "validate":
        from metadata.validate import main_summary, validate_dataset

        report_path = args.report or (args.dataset / "validation_report.json")
        report = validate_dataset(args.dataset, skip_bad=args.skip_bad, report_path=report_path)
        return main_summary(report)
    if args.command == "export-classifier":
        from metadata.classifier_export import export_classifier_layout, load_split_override
        from metadata.splits import SplitConfig

        config = SplitConfig(args.valid_fraction, args.test_fraction, args.seed)
        override = load_split_override(args.splits) if args.splits else None
        return str(export_classifier_layout(args.dataset, args.out, config, override))
    if args.command == "subset":
        from metadata.subset import write_split_subset

        return str(
            write_split_subset(
                args.dataset, args.splits, args.out, tuple(args.keep), not args.no_unassigned
            )
        )
    if args.command == "grid":
        from metadata.grid import save_class_grid

        return str(save_class_grid(args.dataset, args.out, args.per_class, args.tile))
    raise ValueError(f"unknown command {args.command}")


def skip_report(dataset: Path) -> list[str]:
    """One line per input an importer left out under --skip-bad (from ROOT/skipped.json)."""
    from metadata.builder import SKIP_REPORT

    path = dataset / SKIP_REPORT
    if not path.is_file():
        return []
    skipped = json.loads(path.read_text("utf-8")).get("skipped", [])
    lines = [f"skipped {s.get('where')}: {s.get('problem')}" for s in skipped]
    return lines + ([f"{len(skipped)} input(s) skipped; list in {path}"] if skipped else [])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enforce_offline()
    started = time.perf_counter()
    try:
        result = run(args)
    except (MetadataError, ValueError) as error:
        print(f"tiger-metadata {args.command}: error: {error}", file=sys.stderr)
        return 2
    if getattr(args, "skip_bad", False) and args.command in ("ddti", "generic", "folders", "tiger"):
        for line in skip_report(Path(args.out)):
            print(line, file=sys.stderr)
    print(result)
    print(f"done in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
