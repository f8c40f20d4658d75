"""Token rows: a concept's own words in the text encoder's input embedding table.

A word that no kept prompt uses ("zorbo", "purple" once purple is erased) can be given a new
input embedding without changing a single text state of any kept prompt: the encoder reads the
table row by row, so a prompt without the word is encoded exactly as before. An erasure that
edits only those rows leaves every kept prompt's images bit for bit as they were, and the
erasure holds wherever the word appears, in wordings the request never wrote. A concept named
only by words kept concepts share ("solid red circle") has no own row; it is erased in the
UNet's cross-attention instead (erase.py).

The trade-off: a concept evoked without its words (a paraphrase, a description of the look) is
not erased by its rows. Concept Ablation (Kumari et al., 2023) found embedding-only edits less
robust than UNet edits against such prompts; the UNet path stays available (`trainable`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from workers.engine.concepts import CatalogConcept
from workers.engine.loading import LoadedModel

# Words of a surface form that never count as the concept's own ("drawn as an outline" owns
# "drawn" and "outline"): the catalog's prompts may not use them, but users' prompts do, and an
# edited row changes every prompt that contains it.
FUNCTION_WORDS = frozenset(
    "a an the as with of in on at by for from to into onto and or but not no is are be been "
    "it its this that these those his her their some any very".split())


@dataclass(frozen=True)
class TokenRows:
    """Rows of the input embedding table that differ from the base model's."""

    ids: torch.Tensor      # int64 [n]
    values: torch.Tensor   # [n, width]

    def __len__(self) -> int:
        return int(self.ids.numel())


def own_token_ids(model: LoadedModel, concept: CatalogConcept, kept_prompts: list[str]
                  ) -> list[int]:
    """The token ids every surface form of `concept` owns, or [] when one form owns none.

    A form's own tokens are its tokens that no kept prompt contains, function words aside. A
    concept with a form owning nothing ("solid red circle": solid, red and circle are kept
    concepts' words) cannot be erased by its rows alone."""
    tokenizer = model.tokenizer
    used = {t for ids in tokenizer(kept_prompts).input_ids for t in ids} if kept_prompts else set()
    owned: set[int] = set()
    for form in concept.surface_forms:
        words = [w for w in form.lower().split() if w not in FUNCTION_WORDS]
        ids = {t for w in words for t in tokenizer(w, add_special_tokens=False).input_ids}
        mine = ids - used
        if not mine:
            return []
        owned |= mine
    return sorted(owned)


def embedding_table(model: LoadedModel) -> torch.Tensor:
    return model.text_encoder.get_input_embeddings().weight


def changed_rows(base: LoadedModel, edited: LoadedModel) -> TokenRows:
    """The rows of `edited`'s table that differ from `base`'s (empty when none do)."""
    before, after = embedding_table(base), embedding_table(edited)
    ids = (before != after).any(dim=1).nonzero().flatten()
    return TokenRows(ids.cpu(), after[ids].detach().cpu().contiguous())


def with_rows(model: LoadedModel, rows: TokenRows) -> LoadedModel:
    """`model` with its text encoder's rows `rows.ids` set to `rows.values`, as a view: every
    other component shared, a text encoder and prompt cache of its own. No rows: `model`."""
    if not len(rows):
        return model
    if model.is_sdxl:
        raise ValueError("token rows are supported for single-text-encoder models only")
    encoder = copy.deepcopy(model.text_encoder)
    table = encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[rows.ids.to(table.device)] = rows.values.to(table.device, table.dtype)
    return replace(model, text_encoder=encoder, _prompt_cache={})


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


def trainable_rows(model: LoadedModel, ids: list[int]) -> tuple[LoadedModel, RowEditedEmbedding]:
    """A view of `model` whose text encoder reads rows `ids` from a trainable parameter."""
    if model.is_sdxl:
        raise ValueError("token rows are supported for single-text-encoder models only")
    encoder = copy.deepcopy(model.text_encoder)
    embedding = RowEditedEmbedding(encoder.get_input_embeddings().weight, ids)
    encoder.set_input_embeddings(embedding)
    return replace(model, text_encoder=encoder, _prompt_cache={}), embedding


def frozen_rows(view: LoadedModel, embedding: RowEditedEmbedding) -> LoadedModel:
    """The trained view with a plain embedding table again (what versions store and load)."""
    table = nn.Embedding.from_pretrained(embedding.weight_now().detach().clone(), freeze=True)
    view.text_encoder.set_input_embeddings(table)
    view.text_encoder.eval().requires_grad_(False)
    view._prompt_cache.clear()
    return view
