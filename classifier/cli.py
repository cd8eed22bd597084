"""`python -m classifier.cli {train,evaluate,experiment,stand-in}`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from classifier.config import (
    ALL_ARMS,
    ARMS,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    MixConfig,
    ModelConfig,
    TrainConfig,
    load_experiment_config,
)
from classifier.experiment_text import describe_arms


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--croot", required=True, help="classifier layout root")
    parser.add_argument("--subtype", default="FTC", help="task folder (FTC, MTC, malignant, ...)")
    parser.add_argument("--image-size", type=int, default=224)


def _add_train(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument("--arch", default="resnet50", choices=["resnet18", "resnet34", "resnet50"])
    parser.add_argument("--weights", default="", help="local .safetensors/.pt state dict")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--optimizer", default=defaults.optimizer, choices=["adamw", "sgd"])
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument(
        "--imbalance",
        default=defaults.imbalance,
        choices=["weighted_loss", "weighted_sampler", "focal", "none"],
    )
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument(
        "--min-epochs",
        type=int,
        default=defaults.min_epochs,
        help="model selection and early stopping start at this epoch",
    )
    parser.add_argument("--warmup-epochs", type=int, default=defaults.warmup_epochs)
    parser.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "fp16", "bf16"])
    parser.add_argument("--no-progress", action="store_true")


def _add_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", default="youden", choices=["youden", "sensitivity"])
    parser.add_argument("--target-sensitivity", type=float, default=0.9)
    parser.add_argument("--n-bootstrap", type=int, default=2000)


def _configs(args) -> tuple[DataConfig, ModelConfig, TrainConfig, EvalConfig]:
    data = DataConfig(args.croot, args.subtype, args.image_size)
    model = ModelConfig(args.arch, args.weights)
    train = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        imbalance=args.imbalance,
        patience=args.patience,
        min_epochs=args.min_epochs,
        warmup_epochs=args.warmup_epochs,
        mixed_precision=args.mixed_precision,
        progress=not args.no_progress,
    )
    evaluation = EvalConfig(
        getattr(args, "threshold", "youden"),
        getattr(args, "target_sensitivity", 0.9),
        getattr(args, "n_bootstrap", 2000),
    )
    return data, model, train, evaluation


def cmd_train(args) -> None:
    from classifier.layout import read_layout
    from classifier.mixing import add_to_train, matched_counts, read_manifest, select
    from classifier.train import train_classifier
    from generation.offline import enforce_offline

    enforce_offline(args.run_dir)
    data, model, train, _ = _configs(args)
    train = replace(train, seed=args.seed, augmentation=args.augmentation)
    layout = read_layout(data.croot, data.subtype, ("train", "valid"))
    items = layout["train"]
    if args.synthetic_manifest:
        pool = read_manifest(args.synthetic_manifest, data.subtype, args.filtered, data.croot)
        counts = matched_counts(items, [pool], (0, 1), args.synthetic_ratio, args.synthetic_count)
        items = add_to_train(items, select(pool, counts, args.seed))
    state = train_classifier(items, layout["valid"], args.run_dir, model, train, data)
    print(json.dumps(asdict(state), indent=2))


def cmd_evaluate(args) -> None:
    from classifier.evaluate import evaluate_run
    from classifier.layout import read_layout
    from generation.offline import enforce_offline

    out = Path(args.out or Path(args.model).parent)
    enforce_offline(out)
    data = DataConfig(args.croot, args.subtype, args.image_size)
    layout = read_layout(data.croot, data.subtype, ("valid", "test"))
    evaluation = EvalConfig(args.threshold, args.target_sensitivity, args.n_bootstrap)
    metrics = evaluate_run(args.model, layout["valid"], layout["test"], out, evaluation, data)
    print(json.dumps(metrics, indent=2))


def cmd_experiment(args) -> None:
    from classifier.experiment import run_experiment

    if args.config:
        base = load_experiment_config(args.config)
    else:
        data, model, train, evaluation = _configs(args)
        data = replace(data, external_croot=args.external_croot)
        base = ExperimentConfig(
            data=data,
            model=model,
            train=train,
            eval=evaluation,
            mix=MixConfig(
                unfiltered_manifest=args.unfiltered_manifest,
                filtered_manifest=args.filtered_manifest,
                clip_only_manifest=args.clip_only_manifest,
                coarse_only_manifest=args.coarse_only_manifest,
                ratio=args.synthetic_ratio,
                per_class_count=args.synthetic_count,
                classes=tuple(args.synthetic_classes),
            ),
            arms=tuple(args.arms),
            seeds=tuple(args.seeds),
            ratios=tuple(args.ratios),
            run_dir=args.run_dir,
        )
    subtypes = args.subtypes or [base.data.subtype]
    for subtype in subtypes:
        config = replace(base, data=replace(base.data, subtype=subtype))
        results = run_experiment(config)
        print(f"{subtype}: report in {Path(config.run_dir) / subtype / 'report.md'}")
        for arm, row in results["arms"].items():
            delta = f"  Δ {row['delta_auc']:+.3f}" if "delta_auc" in row else ""
            interval = f"[{row['auc_low']:.3f}, {row['auc_high']:.3f}]"
            print(f"  {arm:20s} AUC {row['auc']:.3f} {interval}{delta}")


def cmd_stand_in(args) -> None:
    from classifier.standin import write_stand_in_manifests

    paths = write_stand_in_manifests(args.source, args.subtype, args.out, args.kept_fraction)
    print("\n".join(str(p) for p in paths))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m classifier.cli", description=__doc__)
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch default); 1 is much faster on a shared CPU",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one model (best checkpoint on valid AUC)")
    _add_data(train)
    _add_train(train)
    train.add_argument("--run-dir", required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--augmentation", default="standard", choices=["none", "standard", "strong"])
    train.add_argument("--synthetic-manifest", default="", help="adds synthetic images to train/")
    train.add_argument(
        "--filtered", action="store_true", help="manifest is filtered: use kept rows"
    )
    train.add_argument("--synthetic-ratio", type=float, default=1.0)
    train.add_argument("--synthetic-count", type=int, default=-1, help="per class; -1 = ratio")

    evaluate = commands.add_parser("evaluate", help="test metrics of a trained model folder")
    _add_data(evaluate)
    _add_eval(evaluate)
    evaluate.add_argument("--model", required=True, help="RUN/best folder")
    evaluate.add_argument("--out", default="")

    experiment = commands.add_parser(
        "experiment",
        help="five-arm comparison over seeds",
        description=describe_arms(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    experiment.add_argument("--croot", default="")
    experiment.add_argument("--subtype", default="FTC")
    experiment.add_argument(
        "--external-croot",
        default="",
        help="an independent test-only layout (metadata.cli external-test) scored by every arm",
    )
    experiment.add_argument("--image-size", type=int, default=224)
    _add_train(experiment)
    _add_eval(experiment)
    experiment.add_argument("--config", default="", help="ExperimentConfig JSON (overrides flags)")
    experiment.add_argument("--subtypes", nargs="*", default=[], help="run several tasks")
    experiment.add_argument("--run-dir", default="runs/classifier")
    experiment.add_argument("--arms", nargs="+", default=list(ARMS), choices=ALL_ARMS)
    experiment.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    experiment.add_argument(
        "--ratios", nargs="*", type=float, default=[], help="ratio curve, e.g. 0.25 0.5 1 2 5 10"
    )
    experiment.add_argument("--unfiltered-manifest", default="")
    experiment.add_argument("--filtered-manifest", default="")
    experiment.add_argument("--clip-only-manifest", default="", help="filter_clip_only's pool")
    experiment.add_argument("--coarse-only-manifest", default="", help="coarse_only's pool")
    experiment.add_argument("--synthetic-ratio", type=float, default=1.0)
    experiment.add_argument("--synthetic-count", type=int, default=-1)
    experiment.add_argument("--synthetic-classes", nargs="+", type=int, default=[1])

    stand_in = commands.add_parser("stand-in", help="stand-in manifests from another layout")
    stand_in.add_argument("--source", required=True, help="classifier layout to borrow from")
    stand_in.add_argument("--subtype", default="FTC")
    stand_in.add_argument("--out", required=True)
    stand_in.add_argument("--kept-fraction", type=float, default=0.6)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cpu_threads > 0:
        import torch

        torch.set_num_threads(args.cpu_threads)
    handlers = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "experiment": cmd_experiment,
        "stand-in": cmd_stand_in,
    }
    try:
        handlers[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
