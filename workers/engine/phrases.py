"""Phrases read as one token: how a prompt's token ids change when a model has some."""

from __future__ import annotations

from workers.engine.loading import Phrase


def merge_phrases(row: list[int], phrases: tuple[Phrase, ...]) -> list[int]:
    """`row` with every occurrence of a phrase's ids replaced by the phrase's own id, the
    longest phrase first where two start at one position."""
    ordered = sorted(phrases, key=lambda p: -len(p.token_ids))
    out: list[int] = []
    i = 0
    while i < len(row):
        for phrase in ordered:
            n = len(phrase.token_ids)
            if tuple(row[i:i + n]) == phrase.token_ids:
                out.append(phrase.id)
                i += n
                break
        else:
            out.append(row[i])
            i += 1
    return out
