"""Dataclass configs as CLI flags and JSON files: one mechanism for every training stage.

Flags mirror the config's fields; `--config FILE.json` supplies defaults that flags override;
`--profile NAME` applies a named CPU profile first. Errors name the file and the option.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import MISSING, fields
from pathlib import Path


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


def config_parser(
    prog: str, description: str, config_cls: type, profiles: dict
) -> argparse.ArgumentParser:
    """--config, --profile and one flag per field of `config_cls`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help="JSON file of options (flags override it)")
    parser.add_argument("--profile", choices=sorted(profiles), help="CPU profile (tiny default)")
    for item in fields(config_cls):
        kind, nargs = field_parser(str(item.type))
        default = item.default if item.default is not MISSING else None
        help_text = f"default: {default!r}" if item.default_factory is MISSING else None
        parser.add_argument(
            f"--{item.name}", type=kind, nargs=nargs, default=argparse.SUPPRESS, help=help_text
        )
    return parser


def config_from_args(parser: argparse.ArgumentParser, config_cls: type, profiles: dict, argv):
    """Profile, then config file, then flags; returns the validated config."""
    args = vars(parser.parse_args(argv))
    config_file = args.pop("config", None)
    profile = args.pop("profile", None)
    values = dict(profiles[profile]) if profile else {}
    values.update(args)
    if config_file:
        return config_cls.from_file(config_file, **values)
    return config_cls(**values).validate()


def read_config_file(
    config_cls: type, path: str | os.PathLike, error_cls: type[Exception], overrides: dict
) -> dict:
    """The JSON file's options with `overrides` on top; unknown keys are an error naming it."""
    file = Path(path)
    try:
        data = json.loads(file.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise error_cls(f"{file}: cannot read config ({error})") from None
    if not isinstance(data, dict):
        raise error_cls(f"{file}: config must be a JSON object")
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise error_cls(f"{file}: unknown option(s) {', '.join(unknown)}")
    data.update(overrides)
    return data
