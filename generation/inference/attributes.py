"""The attribute space prompts are composed from, and the user's fix/exclude constraints.

Values come from `metadata.vocabulary` only, so a generated prompt uses exactly the words the
coarse and fine stages were trained on. `halo` (a yes/no finding in the vocabulary's text) is
treated like the other attributes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from metadata.labelset import LabelSet
from metadata.records import MetadataRecord
from metadata.vocabulary import (
    ATTRIBUTE_VALUES,
    UNLABELLED,
    NoduleAttributes,
    compose_text_nd,
)

HALO_VALUES = ("yes", "no")
ATTRIBUTE_SPACE: dict[str, tuple[str, ...]] = {**ATTRIBUTE_VALUES, "halo": HALO_VALUES}
ATTRIBUTES = tuple(ATTRIBUTE_SPACE)
# Attributes the foreground mask decides: a prompt's value must agree with its mask.
MASK_ATTRIBUTES = ("shape", "size", "margins")


class AttributeSpecError(ValueError):
    """A bad attribute name or value in --fix/--exclude (or a constraint that leaves nothing)."""


def check_value(name: str, value: str) -> str:
    if name not in ATTRIBUTE_SPACE:
        raise AttributeSpecError(
            f"unknown attribute {name!r}; expected one of {', '.join(ATTRIBUTES)}"
        )
    if value not in ATTRIBUTE_SPACE[name]:
        allowed = ", ".join(ATTRIBUTE_SPACE[name])
        raise AttributeSpecError(f"unknown {name} value {value!r}; expected one of: {allowed}")
    return value


def parse_assignments(items: list[str] | None, option: str) -> dict[str, list[str]]:
    """['echogenicity=hypoechoic', 'margins=lobulated,spiculated'] -> {name: [values]}."""
    parsed: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise AttributeSpecError(f"{option} {item!r}: expected NAME=VALUE[,VALUE...]")
        name, _, values = item.partition("=")
        name = name.strip()
        for value in (v.strip() for v in values.split(",")):
            parsed.setdefault(name, []).append(check_value(name, value))
    return parsed


@dataclass
class AttributeConstraints:
    """Fixed values (one per attribute, or a set to choose from) and excluded values."""

    fixed: dict[str, list[str]] = field(default_factory=dict)
    excluded: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for table in (self.fixed, self.excluded):
            for name, values in table.items():
                for value in values:
                    check_value(name, value)

    @classmethod
    def from_cli(cls, fix: list[str] | None, exclude: list[str] | None) -> AttributeConstraints:
        return cls(parse_assignments(fix, "--fix"), parse_assignments(exclude, "--exclude"))

    def allowed(self, name: str, support: tuple[str, ...]) -> tuple[str, ...]:
        """Values of `name` the sampler may use: fixed ones, else the support minus exclusions."""
        if name in self.fixed:
            values = tuple(self.fixed[name])
        else:
            values = support
        values = tuple(v for v in values if v not in self.excluded.get(name, ()))
        if not values:
            raise AttributeSpecError(
                f"attribute {name!r}: --fix/--exclude leave no value to generate "
                f"(support: {', '.join(support) or 'none'})"
            )
        return values

    def to_dict(self) -> dict:
        return {"fixed": self.fixed, "excluded": self.excluded}


def record_value(record: MetadataRecord, name: str) -> str | None:
    """A record's value of one attribute as a vocabulary word (halo as yes/no), or None."""
    value = record.attributes.get(name)
    if name == "halo":
        return None if value is None else ("yes" if value else "no")
    return value if value in ATTRIBUTE_SPACE[name] else None


@dataclass
class AttributeStats:
    """Counts of each attribute value (marginals) and of whole combinations, for one subtype."""

    label: str
    marginals: dict[str, Counter]
    dataset_support: dict[str, tuple[str, ...]]
    combinations: Counter
    n_records: int

    @classmethod
    def from_records(cls, records: list[MetadataRecord], label: str) -> AttributeStats:
        if label in ("", UNLABELLED):
            raise AttributeSpecError(f"cannot generate {label!r} images: name a class")
        own = [r for r in records if r.label == label and not r.synthetic]
        marginals = {name: Counter() for name in ATTRIBUTES}
        seen = {name: set() for name in ATTRIBUTES}
        for record in records:
            for name in ATTRIBUTES:
                value = record_value(record, name)
                if value is not None:
                    seen[name].add(value)
        combinations: Counter = Counter()
        for record in own:
            for name in ATTRIBUTES:
                value = record_value(record, name)
                if value is not None:
                    marginals[name][value] += 1
            combinations[combination_key(attribute_dict(record))] += 1
        support = {
            name: tuple(v for v in ATTRIBUTE_SPACE[name] if v in seen[name]) for name in ATTRIBUTES
        }
        return cls(label, marginals, support, combinations, len(own))

    def support(self, name: str, scope: str) -> tuple[str, ...]:
        """Values to draw from: seen for this subtype, seen anywhere in the data, or all words.

        Empty when the data never states the attribute (it is then left out of prompts).
        """
        if scope == "vocabulary":
            return ATTRIBUTE_SPACE[name]
        if scope == "dataset":
            return self.dataset_support[name]
        own = tuple(v for v in ATTRIBUTE_SPACE[name] if self.marginals[name][v] > 0)
        return own or self.dataset_support[name]


def attribute_dict(record: MetadataRecord) -> dict[str, str]:
    return {name: value for name in ATTRIBUTES if (value := record_value(record, name)) is not None}


def combination_key(values: dict[str, str]) -> tuple[str, ...]:
    return tuple(values.get(name, "") for name in ATTRIBUTES)


def to_nodule_attributes(label: str, values: dict[str, str]) -> NoduleAttributes:
    data: dict[str, object] = {k: v for k, v in values.items() if k != "halo"}
    if "halo" in values:
        data["halo"] = values["halo"] == "yes"
    return NoduleAttributes.from_dict({"label": label, **data})


def prompt_text(label: str, values: dict[str, str], labels: LabelSet | None = None) -> str:
    """`text_nd` for a label and attribute words, in the vocabulary's fixed order (the label
    written in the dataset's label-set words)."""
    return compose_text_nd(to_nodule_attributes(label, values), labels)
