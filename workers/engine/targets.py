"""Locality-aware target selection: map each forget prompt to its nearest safe rewrite."""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import UNet2DConditionModel

from workers.engine.concepts import Catalog, CatalogConcept, replace_phrase
from workers.engine.distance import score_distance
from workers.engine.loading import LoadedModel


@dataclass(frozen=True)
class MappingChoice:
    forget_prompt: str
    target: str
    distance: float
    candidates: int


def candidate_rewrites(prompt: str, concept: CatalogConcept, catalog: Catalog,
                       banned: set[str]) -> list[str]:
    """Rewrites of `prompt`: the concept replaced by each same-kind catalog concept, by the
    kind's generic word, and removed (the last two only where unnamed slots are not sampled
    freely). None may mention a banned (erased or being-erased) concept.
    """
    forms = [f for f in concept.surface_forms if f.lower() in prompt.lower()]
    if not forms:
        forms = [concept.name]
    out: list[str] = []
    for slot, form in enumerate(concept.surface_forms):
        if form not in forms:
            continue
        for other in catalog.of_kind(concept.kind):
            if other.name == concept.name:
                continue
            others = other.surface_forms
            out.append(replace_phrase(prompt, form, others[min(slot, len(others) - 1)]))
        if catalog.open_slots:
            continue  # an unnamed slot still samples the erased value (see concepts.py)
        generic = catalog.generic_words.get(concept.kind)
        if generic:
            out.append(replace_phrase(prompt, form, generic))
        out.append(replace_phrase(prompt, form, ""))
    allowed = _allowed(prompt, out, catalog, banned, concept)
    if allowed:
        return allowed
    # Every same-kind concept is erased or contains an erased one (e.g. the last character):
    # fall back to the concept's related concepts of other kinds before any global anchor.
    related = [catalog.concepts[n] for n in concept.related if n in catalog.concepts]
    fallback = [replace_phrase(prompt, form, other.surface_forms[0])
                for form in forms for other in related]
    return _allowed(prompt, fallback, catalog, banned, concept)


def _allowed(prompt: str, rewrites: list[str], catalog: Catalog, banned: set[str],
             concept: CatalogConcept) -> list[str]:
    scrubbed = [_scrub(c, catalog, banned - {concept.name}) for c in rewrites]
    unique = [c for c in dict.fromkeys(scrubbed) if c != prompt]
    return [c for c in unique if not catalog.mentions(c, banned)]


def _scrub(prompt: str, catalog: Catalog, banned: set[str]) -> str:
    """Rewrite other banned concepts a candidate still names (e.g. "circle" in a rewrite of
    "a red circle" when both are erased): by the first allowed concept of the same kind where
    unnamed slots are sampled freely, else by the kind's generic word, else drop them."""
    for other in catalog.concepts.values():
        if not catalog.touches(other.name, banned):
            continue
        substitute = catalog.generic_words.get(other.kind, "")
        if catalog.open_slots:
            allowed = [c for c in catalog.of_kind(other.kind)
                       if not catalog.touches(c.name, banned)]
            substitute = allowed[0].surface_forms[0] if allowed else substitute
        for form in other.surface_forms:
            prompt = replace_phrase(prompt, form, substitute)
    return prompt


def select_mapping_targets(model: LoadedModel, concept: CatalogConcept, prompts: list[str],
                           catalog: Catalog, banned: set[str], *, k: int, seed: int,
                           unet: UNet2DConditionModel | None = None) -> list[MappingChoice]:
    """p*(p) = argmin_{q ∈ candidates(p)} d_score(p, q) under the current version."""
    pairs: list[tuple[str, str]] = []
    for prompt in prompts:
        cands = candidate_rewrites(prompt, concept, catalog, banned) or [""]
        pairs += [(prompt, c) for c in cands]
    dist = score_distance(model, [a for a, _ in pairs], [b for _, b in pairs], k, seed, unet=unet)
    choices = []
    for prompt in prompts:
        scored = [(float(d), b) for (a, b), d in zip(pairs, dist, strict=True) if a == prompt]
        best_d, best = min(scored)
        choices.append(MappingChoice(prompt, best, best_d, len(scored)))
    return choices


def fixed_rewrite(prompt: str, concept: CatalogConcept, catalog: Catalog, banned: set[str]) -> str:
    """DFR's context-preserving map chosen without the model: the first allowed rewrite, favouring
    the concept's first related same-kind concept, else the generic word, else removal."""
    cands = candidate_rewrites(prompt, concept, catalog, banned)
    for name in concept.related:
        other = catalog.concepts.get(name)
        if other is None or other.kind != concept.kind:
            continue
        for c in cands:
            if any(form in c for form in other.surface_forms):
                return c
    return cands[0] if cands else ""
