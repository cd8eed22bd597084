"""A CLIP tokenizer built offline from the BPE vocabulary that open_clip ships.

The tiny default pipeline has no weights anywhere, yet `StableDiffusionPipeline` needs a
transformers `CLIPTokenizer`. open_clip's wheel carries OpenAI's `bpe_simple_vocab_16e6.txt.gz`,
which is the exact vocabulary of SD 1.x/2.x text encoders; we turn it into the `vocab.json` +
`merges.txt` pair that `CLIPTokenizer.from_pretrained` reads (its constructor ignores
`vocab_file=`), so ids equal open_clip's and OpenAI's for every prompt.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer

MODEL_MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# open_clip (and SD 2.x) pad with id 0 ("!"); SD 1.x pads with EOS. Both work with CLIPTextModel
# because the pooled output is taken at the first EOS; we follow open_clip so ids match exactly.
PAD_TOKEN = "!"
# OpenAI's BPE file: a version header, then the merges used by CLIP (49152 - 256 - 2 of them).
NUM_MERGES = 49152 - 256 - 2


def open_clip_bpe_path() -> Path:
    """The BPE merges file shipped inside the open_clip package (no download)."""
    from open_clip.tokenizer import default_bpe

    path = Path(default_bpe())
    if not path.is_file():
        raise FileNotFoundError(f"{path}: open_clip's BPE vocabulary missing; reinstall open_clip")
    return path


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-to-printable-character table (the first 512 vocabulary entries)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


def read_merges(bpe_path: Path) -> list[str]:
    with gzip.open(bpe_path) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    if len(merges) != NUM_MERGES:
        raise ValueError(f"{bpe_path}: expected {NUM_MERGES} merges, found {len(merges)}")
    return merges


def build_vocabulary(merges: list[str]) -> dict[str, int]:
    """Vocabulary in CLIP order: bytes, bytes + '</w>', merged pairs, then BOS and EOS."""
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [char + "</w>" for char in byte_chars]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_tokenizer_files(folder: str | os.PathLike) -> Path:
    """Write vocab.json and merges.txt (the files `CLIPTokenizer.from_pretrained` reads)."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    merges = read_merges(open_clip_bpe_path())
    vocabulary = build_vocabulary(merges)
    (target / "vocab.json").write_text(json.dumps(vocabulary, ensure_ascii=False), "utf-8")
    (target / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    return target


def build_clip_tokenizer(
    folder: str | os.PathLike | None = None, model_max_length: int = MODEL_MAX_LENGTH
) -> CLIPTokenizer:
    """CLIPTokenizer with OpenAI's vocabulary, built without any hub access.

    `folder` keeps the written vocab files (useful for inspection); by default a temporary folder
    is used and removed, since the loaded tokenizer holds everything in memory and
    `save_pretrained` writes it into the pipeline folder.
    """
    if folder is not None:
        return load_from(write_tokenizer_files(folder), model_max_length)
    with tempfile.TemporaryDirectory(prefix="tiger-tokenizer-") as scratch:
        return load_from(write_tokenizer_files(scratch), model_max_length)


def load_from(folder: Path, model_max_length: int) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(
        str(folder),
        local_files_only=True,
        model_max_length=model_max_length,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
    )
