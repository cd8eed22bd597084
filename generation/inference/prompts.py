"""Attribute combinations for diversify prompts: a grid, or draws weighted by the real data.

Sampling draws each attribute from the subtype's real value counts (plus a pseudo-count so rare
values stay possible), tempered by `diversity` (0 = as in the data, 1 = uniform over the allowed
values). `novelty_candidates` > 1 pushes toward under-represented combinations: that many
candidates are drawn and the one whose full combination is rarest (real images plus prompts
already planned) wins. Draws are sequential from one seed, so asking for more images later keeps
the first ones unchanged (what resume relies on).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np

from generation.inference.attributes import (
    ATTRIBUTES,
    AttributeConstraints,
    AttributeSpecError,
    AttributeStats,
    combination_key,
)

STRATEGIES = ("sample", "grid")
SUPPORT_SCOPES = ("subtype", "dataset", "vocabulary")


@dataclass
class PromptConfig:
    """How diversify mode chooses attribute combinations."""

    strategy: str = "sample"
    support: str = "subtype"
    diversity: float = 0.0
    smoothing: float = 0.5
    novelty_candidates: int = 1

    def validate(self) -> PromptConfig:
        if self.strategy not in STRATEGIES:
            raise AttributeSpecError(f"strategy {self.strategy!r} must be one of {STRATEGIES}")
        if self.support not in SUPPORT_SCOPES:
            raise AttributeSpecError(f"support {self.support!r} must be one of {SUPPORT_SCOPES}")
        if not 0.0 <= self.diversity <= 1.0:
            raise AttributeSpecError(f"diversity must be in [0, 1], got {self.diversity}")
        if self.smoothing < 0:
            raise AttributeSpecError(f"smoothing must be >= 0, got {self.smoothing}")
        if self.novelty_candidates < 1:
            raise AttributeSpecError("novelty_candidates must be >= 1")
        return self


class PromptSampler:
    """Yields attribute dicts (vocabulary words) for one subtype under the user's constraints."""

    def __init__(
        self, stats: AttributeStats, constraints: AttributeConstraints, config: PromptConfig
    ):
        self.stats = stats
        self.config = config.validate()
        self.choices: dict[str, tuple[str, ...]] = {}
        for name in ATTRIBUTES:
            support = stats.support(name, config.support)
            if not support and name not in constraints.fixed:
                continue  # the data never states this attribute: keep it out of the prompts
            self.choices[name] = constraints.allowed(name, support)

    def weights(self, name: str) -> np.ndarray:
        counts = np.array(
            [self.stats.marginals[name][v] for v in self.choices[name]], dtype=np.float64
        )
        counts = counts + self.config.smoothing
        if counts.sum() <= 0:
            counts = np.ones_like(counts)
        tempered = counts ** (1.0 - self.config.diversity)
        return tempered / tempered.sum()

    def grid(self) -> list[dict[str, str]]:
        names = list(self.choices)
        return [
            dict(zip(names, values, strict=True))
            for values in itertools.product(*(self.choices[n] for n in names))
        ]

    def draw(self, rng: np.random.Generator) -> dict[str, str]:
        return {
            name: values[int(rng.choice(len(values), p=self.weights(name)))]
            for name, values in self.choices.items()
        }

    def combinations(self, count: int, seed: int) -> list[dict[str, str]]:
        """`count` attribute dicts; a prefix of a longer request with the same seed."""
        if self.config.strategy == "grid":
            # Every cell once per round, in a seeded order so a short run is not one corner.
            cells = self.grid()
            order = np.random.default_rng([seed, 104723]).permutation(len(cells))
            return [dict(cells[order[i % len(cells)]]) for i in range(count)]
        rng = np.random.default_rng([seed, 7919])
        planned: Counter = Counter()
        chosen = []
        for _ in range(count):
            candidates = [self.draw(rng) for _ in range(self.config.novelty_candidates)]
            rarity = [
                self.stats.combinations[combination_key(c)] + planned[combination_key(c)]
                for c in candidates
            ]
            pick = candidates[int(np.argmin(rarity))]
            planned[combination_key(pick)] += 1
            chosen.append(pick)
        return chosen
