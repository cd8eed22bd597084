"""`python -m generation.filtering.cli {train-clip,clip-score,moso,filter}`."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from generation.filtering.clip_params import ClipConfig
from generation.filtering.moso_params import MosoConfig
from generation.filtering.select import FilterConfig
from generation.offline import enforce_offline


def add_dataclass_options(parser: argparse.ArgumentParser, cls, skip: tuple = ()) -> None:
    """One --option per config field, typed from its default."""
    for field in fields(cls):
        if field.name in skip:
            continue
        default = field.default
        if isinstance(default, bool):  # --select-best / --no-select-best
            parser.add_argument(
                "--" + field.name.replace("_", "-"),
                action=argparse.BooleanOptionalAction,
                default=default,
                dest=field.name,
            )
            continue
        kind = type(default) if default is not None else str
        if field.name in ("last_layers",):
            kind = int
        parser.add_argument(
            "--" + field.name.replace("_", "-"), type=kind, default=default, dest=field.name
        )


def pick(args: argparse.Namespace, cls):
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="generation.filtering.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train-clip", help="train the domain CLIP on real image-text pairs")
    train.add_argument("--dataset", type=Path, required=True, help="dataset ROOT (metadata.jsonl)")
    train.add_argument("--out", type=Path, required=True, help="run folder (model in OUT/model)")
    add_dataclass_options(train, ClipConfig)

    score = sub.add_parser("clip-score", help="per-image CLIP score of a synthetic manifest")
    score.add_argument("--model", type=Path, required=True, help="saved CLIP folder")
    score.add_argument("--manifest", type=Path, required=True, help="GEN or GEN/manifest.jsonl")
    score.add_argument("--out", type=Path, required=True)
    score.add_argument("--text-key", default="text_nd", help="manifest key scored against")
    score.add_argument("--seed", type=int, default=0)

    moso = sub.add_parser("moso", help="MoSo score of real train + synthetic images")
    moso.add_argument("--dataset", type=Path, default=None, help="real dataset ROOT")
    moso.add_argument("--manifest", type=Path, required=True)
    moso.add_argument("--out", type=Path, required=True)
    moso.add_argument("--holdout-fraction", type=float, default=0.2)
    add_dataclass_options(moso, MosoConfig)

    keep = sub.add_parser("filter", help="keep synthetic images by CLIP and MoSo scores")
    keep.add_argument("--manifest", type=Path, required=True)
    keep.add_argument("--out", type=Path, required=True, help="FILTERED folder")
    keep.add_argument("--clip-scores", type=Path, default=None)
    keep.add_argument("--moso-scores", type=Path, default=None)
    keep.add_argument("--clip-threshold", type=float, default=None)
    keep.add_argument("--clip-quantile", type=float, default=None)
    keep.add_argument("--moso-prune-ratio", type=float, default=0.0)
    keep.add_argument(
        "--reference-dataset",
        type=Path,
        default=None,
        help="real dataset (train data): first drop frames far less like any real train frame "
        "than every held-out real frame is (noise, blank or broken generations)",
    )
    keep.add_argument("--holdout-fraction", type=float, default=0.2)
    keep.add_argument(
        "--off-distribution-fraction",
        type=float,
        default=FilterConfig.off_distribution_fraction,
        help="threshold = this fraction of the least typical held-out frame's correlation",
    )
    keep.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="keep near-copies of an earlier image (dropped by default; MoSo cannot see them)",
    )
    quality = sub.add_parser(
        "quality",
        help="FD, KID, precision/recall and memorization of a synthetic set vs real, in the "
        "domain CLIP's image space",
    )
    quality.add_argument("--model", type=Path, required=True, help="saved CLIP folder")
    quality.add_argument("--manifest", type=Path, required=True, help="GEN or GEN/manifest.jsonl")
    quality.add_argument("--dataset", type=Path, required=True, help="the full real dataset")
    quality.add_argument("--splits", type=Path, required=True, help="CROOT/splits.json")
    quality.add_argument("--filtered", type=Path, default=None, help="FILTERED manifest (kept)")
    quality.add_argument(
        "--extra-set",
        nargs="*",
        default=[],
        metavar="NAME=MANIFEST",
        help="further synthetic sets measured alike, e.g. coarse_only=GEN/coarse_only",
    )
    quality.add_argument(
        "--inception-weights",
        type=Path,
        default=None,
        help="a local InceptionV3 FID weights file (torch-fidelity's, .pth or .safetensors; "
        "read without running code): adds FID/KID in Inception space; never downloaded",
    )
    quality.add_argument("--out", type=Path, required=True, help="folder for OUT/quality.json")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    enforce_offline(args.out)
    from generation.filtering import commands  # after enforce_offline: no hub at import time

    if args.command == "train-clip":
        from generation.filtering.clip_train import train_clip

        print(train_clip(args.dataset, args.out, pick(args, ClipConfig)))
    elif args.command == "clip-score":
        report = commands.run_clip_score(
            args.model, args.manifest, args.out, args.text_key, args.seed
        )
        print({k: v for k, v in report.items() if "matched" in k})
    elif args.command == "quality":
        extra = dict(item.split("=", 1) for item in args.extra_set)
        report = commands.run_quality(
            args.model,
            args.manifest,
            args.dataset,
            args.splits,
            args.out,
            args.filtered,
            {name: Path(path) for name, path in extra.items()},
            args.inception_weights,
        )
        print({mode: row["vs_train"] for mode, row in report["modes"].items()})
    elif args.command == "moso":
        config = pick(args, MosoConfig)
        print(
            commands.run_moso(args.dataset, args.manifest, args.out, config, args.holdout_fraction)
        )
    else:
        config = FilterConfig(
            args.clip_threshold,
            args.clip_quantile,
            args.moso_prune_ratio,
            drop_duplicates=not args.keep_duplicates,
            off_distribution_fraction=args.off_distribution_fraction,
        )
        summary = commands.run_filter(
            args.manifest,
            args.out,
            config,
            args.clip_scores,
            args.moso_scores,
            args.reference_dataset,
            args.holdout_fraction,
        )
        print(f"kept {summary['kept']} of {summary['total']}; report in {args.out}/report.md")


if __name__ == "__main__":
    main()
