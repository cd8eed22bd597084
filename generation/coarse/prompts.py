"""One prompt per record: `text_nd` (nodule words) first, then `text_bg` (background).

CLIP reads 77 tokens; words beyond that are cut. The nodule description goes first so it is never
the part that is cut; `text_bg` (its numeric stats take ~10 tokens each) loses its tail first.
`background="words"` drops the numeric stats and keeps the background words; "none" drops it.
"""

from __future__ import annotations

import re

BACKGROUND_MODES = ("full", "words", "none")
SEPARATOR = "; "
NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


def background_words(text_bg: str) -> str:
    """'128.8, 31.7, 1.29, bright, low contrast' -> 'bright, low contrast'."""
    parts = [part.strip() for part in text_bg.split(",")]
    return ", ".join(part for part in parts if part and not NUMBER.match(part))


def combine_prompt(text_nd: str, text_bg: str, background: str = "full") -> str:
    if background not in BACKGROUND_MODES:
        raise ValueError(f"background mode {background!r} must be one of {BACKGROUND_MODES}")
    nodule = text_nd.strip()
    if background == "none":
        return nodule
    tissue = text_bg.strip() if background == "full" else background_words(text_bg)
    return f"{nodule}{SEPARATOR}{tissue}" if tissue else nodule


def nodule_phrases(text_nd: str) -> list[str]:
    """'malignant, medullary, solid, hypoechoic' -> its comma-separated findings."""
    return [part.strip() for part in text_nd.split(",") if part.strip()]


def drop_phrases(text_nd: str, keep) -> str:
    """The nodule description with the phrases whose `keep` entry is false left out (word
    dropout: each finding then has to show in the image on its own, not through the label
    word that co-occurs with it); entries past `keep`'s end are kept."""
    phrases = nodule_phrases(text_nd)
    flags = [bool(flag) for flag in keep][: len(phrases)]
    flags += [True] * (len(phrases) - len(flags))
    return ", ".join(phrase for phrase, flag in zip(phrases, flags, strict=True) if flag)


def token_count(tokenizer, prompt: str) -> int:
    """Tokens including BOS/EOS, untruncated (compare with tokenizer.model_max_length)."""
    return len(tokenizer(prompt, truncation=False).input_ids)
