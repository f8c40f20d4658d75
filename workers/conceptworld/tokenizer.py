"""A byte-level BPE vocabulary in CLIP's format, learned from the concept world's prompts.

The files are the ones `transformers.CLIPTokenizer` reads (vocab.json, merges.txt). Every byte has
a token with and without the end-of-word marker, so any text tokenizes — unknown words split into
pieces, they never become <unk>.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from transformers import CLIPTokenizer

END_OF_WORD = "</w>"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 16


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def _words(texts: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", text.lower()))
    return counts


def learn_merges(texts: list[str]) -> list[tuple[str, str]]:
    """Classic BPE training: merge the most frequent adjacent pair until every word is one token."""
    byte_char = bytes_to_unicode()
    words: dict[tuple[str, ...], int] = {}
    for word, count in _words(texts).items():
        chars = [byte_char[b] for b in word.encode("utf-8")]
        words[tuple(chars[:-1]) + (chars[-1] + END_OF_WORD,)] = count
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))  # ties broken by the pair itself
        merges.append(best)
        words = {_merge(symbols, best): count for symbols, count in words.items()}


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def write_tokenizer(texts: list[str], folder: Path) -> CLIPTokenizer:
    """Write vocab.json, merges.txt and the tokenizer config into `folder`; return the tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(texts)
    base = list(bytes_to_unicode().values())
    tokens = base + [c + END_OF_WORD for c in base] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH,
                              pad_token=EOS)
    tokenizer.save_pretrained(str(folder))
    return CLIPTokenizer.from_pretrained(str(folder))
