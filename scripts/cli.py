"""`tiger`: run the whole pipeline from one config, or rebuild a run's report.

tiger run                          # the quick profile on the built-in phantom, CPU
tiger run --data ddti              # the same on DDTI (../shared/data/ddti)
tiger run --profile gpu --pretrained /models/sd-2-1 --data /data/my_tiger_dataset
tiger run --config my.yaml --set generation.diversify=64
tiger config --profile long        # print the resolved config (a starting point to edit)
tiger report runs/tiger            # rebuild the report of a finished run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from scripts.pipeline.config import DEFAULT_PROFILE, PROFILES, PipelineConfigError, load_config


def parse_set(items: list[str]) -> dict:
    """['generation.diversify=64', 'subtypes=[FTC]'] -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise PipelineConfigError(f"--set {item!r}: expected KEY=VALUE")
        dotted, text = item.split("=", 1)
        node = out
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(text)
    return out


def overrides_from(args: argparse.Namespace) -> dict:
    overrides = parse_set(args.set)
    if args.data:
        overrides.setdefault("data", {})["source"] = args.data
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    if args.pretrained:
        overrides["pretrained_model_name_or_path"] = args.pretrained
    return overrides


# What each profile costs, shown by --help (the values themselves: `tiger config --profile P`).
PROFILE_COSTS = {
    "toy": "CPU, ~2 min: 60 frames, a few steps (the tests' size; results mean nothing)",
    "quick": "CPU, ~30-40 min on 2 cores: tiny models at 64 px, 1000 phantom frames, 9 arms",
    "long": "CPU, hours: 1200 frames at 128 px, 2400 coarse / 3000 fine steps, 3 seeds, "
    "the ratio curve",
    "gpu": "one CUDA GPU and a local Stable Diffusion folder (--pretrained): 512 px, bf16",
}
COMMANDS = {
    "run": "run every stage (finished stages are skipped, an interrupted one resumes), then "
    "write the report",
    "config": "print the resolved pipeline config (a starting point for --config)",
    "report": "rebuild the report of a finished run folder",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiger", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    profiles = "; ".join(f"{name}: {PROFILE_COSTS.get(name, '')}" for name in sorted(PROFILES))
    for name in ("run", "config"):
        sub = commands.add_parser(name, help=COMMANDS[name], description=COMMANDS[name])
        sub.add_argument(
            "--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES), help=f"{profiles}"
        )
        sub.add_argument("--config", type=Path, default=None, help="YAML or JSON pipeline config")
        sub.add_argument("--data", default=None, help="phantom | ddti | a dataset folder")
        sub.add_argument("--run-dir", default=None, help="default: runs/tiger (or the config's)")
        sub.add_argument("--pretrained", default=None, help="local Stable Diffusion folder")
        sub.add_argument(
            "--set",
            nargs="*",
            default=[],
            metavar="KEY=VALUE",
            help="override config values, e.g. --set generation.diversify=64 "
            "coarse.max_train_steps=500 'subtypes=[FTC]' (values read as YAML)",
        )
    report = commands.add_parser("report", help=COMMANDS["report"], description=COMMANDS["report"])
    report.add_argument("run_dir", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from generation.offline import enforce_offline

    try:
        if args.command == "report":
            from scripts.pipeline.report import write_report

            enforce_offline(args.run_dir)
            print(write_report(args.run_dir))
            return 0
        config = load_config(args.profile, args.config, overrides_from(args))
        if args.run_dir is None and args.data and args.data != "phantom" and not args.config:
            config.run_dir = f"runs/tiger-{Path(args.data).name}"
        if args.command == "config":
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        from scripts.pipeline.report import write_report
        from scripts.pipeline.runner import PipelineRunner

        enforce_offline(config.run_dir)
        PipelineRunner(config).run()
        report = write_report(config.run_dir)
        print(f"[tiger] report: {report}")
        return 0
    except PipelineConfigError as error:
        print(f"tiger: config error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"tiger: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
