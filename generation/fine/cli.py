"""`python -m generation.fine.cli --train_data_dir DATA --coarse_model_path SD --output_dir RUN`.

Flags mirror `FineConfig` fields (see `--help`); `--config FILE.json` supplies defaults that flags
override; `--profile quick|long` applies a CPU profile for the tiny default.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import MISSING, fields

from generation.coarse.cli import field_parser
from generation.fine.config import PROFILES, FineConfig, FineConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generation.fine.cli",
        description="Fine stage: train FG/BG ControlNet branches on the frozen coarse model.",
    )
    parser.add_argument("--config", help="JSON file of options (flags override it)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="CPU profile (tiny default)")
    for item in fields(FineConfig):
        kind, nargs = field_parser(str(item.type))
        default = item.default if item.default is not MISSING else None
        help_text = f"default: {default!r}" if item.default_factory is MISSING else None
        parser.add_argument(
            f"--{item.name}", type=kind, nargs=nargs, default=argparse.SUPPRESS, help=help_text
        )
    return parser


def config_from_args(argv: list[str] | None = None) -> FineConfig:
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config", None)
    profile = args.pop("profile", None)
    values = dict(PROFILES[profile]) if profile else {}
    values.update(args)
    if config_file:
        return FineConfig.from_file(config_file, **values)
    return FineConfig(**values).validate()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = config_from_args(argv)
    except FineConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from generation.fine.train import train_fine

    output = train_fine(config)
    print(f"fine-stage model saved to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
