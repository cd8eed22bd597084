"""`python -m generation.coarse.cli --train_data_dir DATA --output_dir RUN [options]`.

Flags mirror `CoarseConfig` fields (see `--help`); `--config FILE.json` supplies defaults that
flags override; `--profile quick|long` applies a CPU profile for the tiny default.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import MISSING, fields

from generation.coarse.config import PROFILES, CoarseConfig, CoarseConfigError


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def optional(convert):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else convert(text)

    return parse


def field_parser(annotation: str):
    """argparse type and nargs for a dataclass field annotation (as a string)."""
    base = annotation.replace(" | None", "")
    convert = {"int": int, "float": float, "str": str, "bool": parse_bool}
    if base.startswith("list["):
        return convert[base[5:-1]], "*"
    parse = convert[base]
    return (optional(parse) if "None" in annotation else parse), None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generation.coarse.cli",
        description="Coarse stage: fine-tune Stable Diffusion on ultrasound images + texts.",
    )
    parser.add_argument("--config", help="JSON file of options (flags override it)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="CPU profile (tiny default)")
    for item in fields(CoarseConfig):
        kind, nargs = field_parser(str(item.type))
        default = item.default if item.default is not MISSING else None
        help_text = f"default: {default!r}" if item.default_factory is MISSING else None
        parser.add_argument(
            f"--{item.name}", type=kind, nargs=nargs, default=argparse.SUPPRESS, help=help_text
        )
    return parser


def config_from_args(argv: list[str] | None = None) -> CoarseConfig:
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config", None)
    profile = args.pop("profile", None)
    values = dict(PROFILES[profile]) if profile else {}
    values.update(args)
    if config_file:
        return CoarseConfig.from_file(config_file, **values)
    return CoarseConfig(**values).validate()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = config_from_args(argv)
    except CoarseConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from generation.coarse.train import train_coarse

    output = train_coarse(config)
    print(f"pipeline saved to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
