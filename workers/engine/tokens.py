"""Token rows: a concept's own words in the text encoder's input embedding table.

A word that no kept prompt uses ("zorbo", "purple" once purple is erased) can be given a new
input embedding without changing a single text state of any kept prompt: the encoder reads the
table row by row, so a prompt without the word is encoded exactly as before. An erasure that
edits only those rows leaves every kept prompt's images bit for bit as they were, and the
erasure holds wherever the word appears, in wordings the request never wrote. A name made only
of words kept concepts use ("solid red circle": solid, red and circle) becomes a phrase read as
one token of its own (`Phrase`, a row past the base vocabulary), where no kept prompt contains
the whole phrase; otherwise the concept is erased in the UNet's cross-attention (erase.py). A
word whose targets swap it for one token takes that token's row (`substituted_rows`), and a
phrase spelled with such a copy reads as the phrase (`spelled_alike`).

The trade-off: a concept evoked without its words (a paraphrase, a description of the look) is
not erased by its rows, as the UNet is unchanged; the UNet path stays available (`trainable`).
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextModel

from workers.engine.concepts import CatalogConcept, put_in_place_of
from workers.engine.conditioning import token_ids
from workers.engine.loading import LoadedModel, Phrase
from workers.engine.phrases import merge_phrases

# Words of a surface form that never count as the concept's own ("drawn as an outline" owns
# "drawn" and "outline"): the catalog's prompts may not use them, but users' prompts do, and an
# edited row changes every prompt that contains it.
FUNCTION_WORDS = frozenset(
    "a an the as with of in on at by for from to into onto and or but not no is are be been "
    "it its this that these those his her their some any very".split())


@dataclass(frozen=True)
class TokenRows:
    """Rows of the input embedding table that differ from the base model's, and the phrases
    read as one token (their rows are among `ids`)."""

    ids: torch.Tensor      # int64 [n]
    values: torch.Tensor   # [n, width]
    phrases: tuple[Phrase, ...] = ()

    def __len__(self) -> int:
        return int(self.ids.numel())


@dataclass(frozen=True)
class Owned:
    """What an erasure may train for some concepts: rows of words they own, and names of
    theirs made only of shared words, as new phrases (text, base token ids)."""

    ids: list[int]
    phrases: list[tuple[str, tuple[int, ...]]]

    def __bool__(self) -> bool:
        return bool(self.ids or self.phrases)


def owned_tokens(model: LoadedModel, concept: CatalogConcept, kept_prompts: list[str],
                 taken: frozenset[int] = frozenset()) -> Owned | None:
    """What `concept` owns, or None when one of its names owns nothing.

    A name owns its tokens that no kept prompt contains, function words aside, and that no
    earlier erasure owns (`taken`: its prompts read them too); a name owning no word owns
    itself as a phrase when no kept prompt contains the whole of it ("solid red circle"; not
    "red circle" while "a solid red circle" is kept). A name with a word an earlier erasure
    owns is erased already, by what it contains ("solid red circle" once solid is): it needs
    nothing of its own. Phrase rows trained to imitate solid's rows drew the composite in 8
    of 128 images and 12 of 128 held-out, where solid's rows alone drew it in 2 and 1
    (drawn11, thirty-fifth session)."""
    kept = token_ids(model, kept_prompts) if kept_prompts else []
    used = {t for row in kept for t in row} | taken
    words: set[int] = set()
    phrases: list[tuple[str, tuple[int, ...]]] = []
    for form in concept.surface_forms:
        spelled = _form_words(model, form)
        if spelled & taken:
            continue
        mine = spelled - used
        if mine:
            words |= mine
            continue
        sequence = tuple(_ids(model, form.lower()))
        if not sequence or any(_contains(row, sequence) for row in kept):
            return None
        if sequence not in (p.token_ids for p in model.phrases):
            phrases.append((form.lower(), sequence))
    return Owned(sorted(words), phrases)


def erased_by(model: LoadedModel, concept: CatalogConcept, earlier: dict[str, frozenset[int]]
              ) -> list[str]:
    """The earlier erasures (`earlier`: the word ids each owned) whose words `concept`'s names
    say, when every name says one: it is erased already, by what it contains, and owns
    nothing (owned_tokens). Else []."""
    forms = [_form_words(model, form) for form in concept.surface_forms]
    if not all(any(words & ids for ids in earlier.values()) for words in forms):
        return []
    return [name for name, ids in earlier.items() if any(words & ids for words in forms)]


def word_ids(model: LoadedModel, concept: CatalogConcept) -> list[int]:
    """The token ids of `concept`'s names, function words aside."""
    return sorted({t for form in concept.surface_forms for t in _form_words(model, form)})


def _form_words(model: LoadedModel, form: str) -> set[int]:
    return {t for w in form.lower().split() if w not in FUNCTION_WORDS for t in _ids(model, w)}


def read_as(model: LoadedModel, earlier: CatalogConcept, ids: list[int]) -> list[int]:
    """The words of an earlier erased concept whose rows are now copies of a row in `ids`
    ("star" substituted by "diamond"): once those words are erased too, the earlier concept
    would be drawn as what they no longer are."""
    table = embedding_table(model)
    return [w for w in word_ids(model, earlier) if w not in ids
            and any(torch.equal(table[w], table[i]) for i in ids)]


def _ids(model: LoadedModel, text: str) -> list[int]:
    base = model.tokenizer(text, add_special_tokens=False).input_ids
    return merge_phrases(base, model.phrases)


def _contains(row: list[int], sequence: tuple[int, ...]) -> bool:
    n = len(sequence)
    return any(tuple(row[i:i + n]) == sequence for i in range(len(row) - n + 1))


def row_names(model: LoadedModel, ids: list[int]) -> list[str]:
    """What each row reads: its token, or its phrase in quotes."""
    phrases = {p.id: p.text for p in model.phrases}
    return [f'"{phrases[i]}"' if i in phrases else str(model.tokenizer.convert_ids_to_tokens(i))
            for i in ids]


def embedding_table(model: LoadedModel) -> torch.Tensor:
    return model.text_encoder.get_input_embeddings().weight


def copied_rows(base: LoadedModel, rows: TokenRows) -> dict[int, int]:
    """Which of `rows` are exact copies of another of `base`'s rows (a substituted word): row
    id → the id it copies (the lowest, where several match). Phrase rows are never copies."""
    table = embedding_table(base)
    out: dict[int, int] = {}
    for i, value in zip(rows.ids.tolist(), rows.values, strict=True):
        if i < len(table):
            same = (table == value.to(table.device, table.dtype)).all(dim=1).nonzero()
            if len(same):
                out[i] = int(same[0])
    return out


def changed_rows(base: LoadedModel, edited: LoadedModel) -> TokenRows:
    """The rows of `edited`'s table that differ from `base`'s (empty when none do): every row
    past the base table's end (the phrases') included."""
    before, after = embedding_table(base), embedding_table(edited)
    n = len(before)
    ids = torch.cat([(before != after[:n]).any(dim=1).nonzero().flatten(),
                     torch.arange(n, len(after), device=after.device)])
    return TokenRows(ids.cpu(), after[ids].detach().cpu().contiguous(), edited.phrases)


def with_rows(model: LoadedModel, rows: TokenRows) -> LoadedModel:
    """`model` with its text encoder's rows `rows.ids` set to `rows.values` (the table grown
    for the phrases), as a view: every other component shared, a text encoder and prompt cache
    of its own. No rows: `model`."""
    if not len(rows):
        return model
    encoder, table = _encoder_copy(model)
    grown = torch.cat([table, table.new_zeros(len(rows.phrases), table.shape[1])])
    with torch.no_grad():
        grown[rows.ids.to(table.device)] = rows.values.to(table.device, table.dtype)
    return _view(model, encoder, nn.Embedding.from_pretrained(grown, freeze=True), rows.phrases)


class RowEditedEmbedding(nn.Module):
    """An embedding table with some rows trainable and the rest frozen exactly."""

    def __init__(self, table: torch.Tensor, ids: list[int]) -> None:
        super().__init__()
        self.table: torch.Tensor
        self.ids: torch.Tensor
        self.register_buffer("table", table.detach().clone())
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long, device=table.device))
        self.rows = nn.Parameter(table.detach()[ids].clone())

    def weight_now(self) -> torch.Tensor:
        return self.table.index_put((self.ids,), self.rows)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight_now())


def trainable_rows(model: LoadedModel, owned: Owned, substitutes: dict[int, int] | None = None,
                   restarts: dict[int, list[int]] | None = None
                   ) -> tuple[LoadedModel, RowEditedEmbedding]:
    """A view of `model` whose text encoder reads the owned rows from a trainable parameter:
    the words' rows, and a new row for each new phrase, started at the mean of its words'. A
    word in `substitutes` instead takes its substitute token's row, frozen; an earlier phrase
    in `restarts` starts again at the mean of the rows of the words given for it."""
    substitutes = substitutes or {}
    encoder, table = _encoder_copy(model)
    start = len(table)
    phrases = tuple(Phrase(text, ids, start + i) for i, (text, ids) in enumerate(owned.phrases))
    grown = torch.cat([table, *(table[list(p.token_ids)].mean(0, keepdim=True) for p in phrases)])
    for row, token in substitutes.items():
        grown[row] = table[token]
    for row, words in (restarts or {}).items():
        grown[row] = table[words].mean(0)
    embedding = RowEditedEmbedding(grown, [i for i in owned.ids if i not in substitutes]
                                   + [p.id for p in phrases])
    return _view(model, encoder, embedding, model.phrases + phrases), embedding


def restarted_phrases(model: LoadedModel, pairs: list[tuple[str, str]], ids: list[int]
                      ) -> dict[int, list[int]]:
    """For each earlier phrase among `ids`, trained again: the words its mapping targets most
    often put in its place ("solid orange star" in "a solid yellow star" -> "a solid orange
    star"), as token ids. Restarted there, as a new phrase starts at its own words, the row
    is trained from near its target, where from its old one it drew a scatter of scenes
    (drawn3, thirty-third session)."""
    out: dict[int, list[int]] = {}
    for phrase in model.phrases:
        if phrase.id not in ids:
            continue
        votes = Counter(words for prompt, target in pairs
                        if (words := put_in_place_of(phrase.text, prompt, target)))
        if votes:
            words = votes.most_common(1)[0][0]
            out[phrase.id] = list(model.tokenizer(words, add_special_tokens=False).input_ids)
    return out


def substituted_rows(model: LoadedModel, pairs: list[tuple[str, str]], ids: list[int]
                     ) -> dict[int, int]:
    """For each row of `ids`: the token its mapping targets most often put in its place, where
    a forget prompt and its target differ by that one token alone ("a yellow circle" -> "a
    orange circle": yellow -> orange). Rows never substituted so are left out.

    That token's row is the exact minimiser of the unlearn loss on every such prompt: the
    prompt is then encoded as its target, state for state."""
    wanted = set(ids)
    counts: defaultdict[int, Counter[int]] = defaultdict(Counter)
    for source, target in pairs:
        a, b = _ids(model, source), _ids(model, target)
        shorter = min(len(a), len(b))
        start = next((i for i in range(shorter) if a[i] != b[i]), shorter)
        end = 0
        while end < shorter - start and a[-1 - end] == b[-1 - end]:
            end += 1
        old, new = a[start:len(a) - end], b[start:len(b) - end]
        if len(old) == 1 and len(new) == 1 and old[0] in wanted and new[0] not in wanted:
            counts[old[0]][new[0]] += 1
    return {row: max(votes, key=lambda t: (votes[t], -t)) for row, votes in counts.items()}


def spelled_alike(model: LoadedModel, kept_prompts: list[str]) -> tuple[LoadedModel, list[int]]:
    """`model` with each phrase also read from every other spelling its encoder reads word for
    word as the phrase's own, and the new phrases' ids. Once red's row is a copy of orange's,
    "solid red circle" unmerged is "solid orange circle" unmerged, which draws what the phrase
    "solid orange circle" erased: it becomes a phrase of its own with the phrase's row.

    Only a phrase's kept words (those of `kept_prompts`, rows as in the base) are respelled: a
    phrase word erased since reads as something else, and so does the phrase unmerged. A kept
    word is never a respelling, whatever its row: it keeps its meaning ("solid yellow circle"
    stays itself when orange's row is a copy of yellow's)."""
    if not model.phrases:
        return model, []
    used = {t for row in model.tokenizer(kept_prompts, add_special_tokens=False).input_ids
            for t in row} if kept_prompts else set()
    table = embedding_table(model)
    vocabulary = len(table) - len(model.phrases)
    copies: dict[int, list[int]] = {}
    for t in {t for p in model.phrases for t in p.token_ids if t in used}:
        same = (table[:vocabulary] == table[t]).all(dim=1).nonzero().flatten().tolist()
        copies[t] = [w for w in same if w != t and w not in used]
    texts = {p.text for p in model.phrases}
    added: list[Phrase] = []
    sources: list[int] = []
    for phrase in model.phrases:
        options = [[t, *copies.get(t, [])] for t in phrase.token_ids]
        for spelling in itertools.product(*options):
            text = model.tokenizer.decode(list(spelling))
            # a text that tokenizes back to its spelling names it: no prompt reads the others
            if text in texts or tuple(
                    model.tokenizer(text, add_special_tokens=False).input_ids) != spelling:
                continue
            texts.add(text)
            added.append(Phrase(text, spelling, len(table) + len(added)))
            sources.append(phrase.id)
    if not added:
        return model, []
    encoder, base = _encoder_copy(model)
    grown = torch.cat([base, base[sources]])
    return (_view(model, encoder, nn.Embedding.from_pretrained(grown, freeze=True),
                  model.phrases + tuple(added)), [p.id for p in added])


def _encoder_copy(model: LoadedModel) -> tuple[CLIPTextModel, torch.Tensor]:
    """A copy of `model`'s text encoder for a view, and its input embedding table."""
    if model.is_sdxl:
        raise ValueError("token rows are supported for single-text-encoder models only")
    encoder = copy.deepcopy(model.text_encoder)
    return encoder, encoder.get_input_embeddings().weight.detach()


def _view(model: LoadedModel, encoder: CLIPTextModel, table: nn.Module,
          phrases: tuple[Phrase, ...]) -> LoadedModel:
    """A view of `model` reading `table` through its own `encoder` (a copy), with `phrases`:
    every other component shared, a prompt cache of its own."""
    encoder.set_input_embeddings(table)
    return replace(model, text_encoder=encoder, phrases=phrases, _prompt_cache={})


def frozen_rows(view: LoadedModel, embedding: RowEditedEmbedding) -> LoadedModel:
    """The trained view with a plain embedding table again (what versions store and load)."""
    table = nn.Embedding.from_pretrained(embedding.weight_now().detach().clone(), freeze=True)
    view.text_encoder.set_input_embeddings(table)
    view.text_encoder.eval().requires_grad_(False)
    view._prompt_cache.clear()
    return view
