"""Locality-aware target selection: map each forget prompt to its nearest safe rewrite."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from diffusers import UNet2DConditionModel

from workers.engine.concepts import (
    Catalog,
    CatalogConcept,
    find_phrase,
    put_in_place_of,
    replace_phrase,
)
from workers.engine.distance import score_distance
from workers.engine.loading import LoadedModel


class NoSafeTarget(ValueError):
    """A forget prompt has no rewrite that names no erased concept: every concept of its kind,
    and every related one, is erased, so nothing the model could draw in its place is allowed
    (the last style of a world where every object has one). Mapped to the empty prompt, such a
    step drew the concept in 28 of 32 images and brought an earlier erasure back; refused, the
    model stays as it was. `concept`: the one that cannot be erased."""

    def __init__(self, concept: str, message: str) -> None:
        super().__init__(message)
        self.concept = concept


@dataclass(frozen=True)
class MappingChoice:
    forget_prompt: str
    target: str
    distance: float
    candidates: int


def candidate_rewrites(prompt: str, concept: CatalogConcept, catalog: Catalog,
                       banned: set[str], *, every_substitute: bool = True,
                       fallback: bool = True) -> list[str]:
    """Rewrites of `prompt`: the concept replaced by each same-kind catalog concept, by the
    kind's generic word, and removed (the last two only where unnamed slots are not sampled
    freely). None may mention a banned (erased or being-erased) concept; an erased one the
    prompt names besides is rewritten too (see `_scrub`). With none left, the concept's related
    concepts of other kinds, unless not `fallback`.
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
    out += _part_swaps(prompt, concept, catalog)
    allowed = _allowed(prompt, out, catalog, banned, concept, every_substitute)
    if allowed or not fallback:
        return allowed
    # Every same-kind concept is erased or contains an erased one (e.g. the last character):
    # fall back to the concept's related concepts of other kinds before any global anchor.
    related = [catalog.concepts[n] for n in concept.related if n in catalog.concepts]
    of_related = [replace_phrase(prompt, form, other.surface_forms[0])
                  for form in forms for other in related]
    return _allowed(prompt, of_related, catalog, banned, concept, every_substitute)


def _part_swaps(prompt: str, concept: CatalogConcept, catalog: Catalog) -> list[str]:
    """For a concept made of others ("solid red circle" contains solid, red and circle): the
    prompt with one part changed to another concept of that part's kind. Changing one part is
    enough to leave the concept and keeps the rest of the prompt, where swapping the whole
    phrase for another composite ("striped blue square") moves the shape and colour words too."""
    out: list[str] = []
    for part_name in concept.contains:
        part = catalog.concepts.get(part_name)
        if part is None:
            continue
        for slot, form in enumerate(part.surface_forms):
            if not find_phrase(prompt, form):
                continue
            for other in catalog.of_kind(part.kind):
                if other.name != part.name:
                    forms = other.surface_forms
                    out.append(replace_phrase(prompt, form, forms[min(slot, len(forms) - 1)]))
    return out


def _allowed(prompt: str, rewrites: list[str], catalog: Catalog, banned: set[str],
             concept: CatalogConcept, every_substitute: bool) -> list[str]:
    scrubbed = [v for c in rewrites
                for v in _scrub(c, catalog, banned - {concept.name}, every_substitute)]
    unique = [c for c in dict.fromkeys(scrubbed) if c != prompt]
    return [c for c in unique if not catalog.mentions(c, banned)]


def _scrub(prompt: str, catalog: Catalog, banned: set[str], every_substitute: bool) -> list[str]:
    """Rewrite other banned concepts a candidate still names (e.g. "star" in a rewrite of "a
    yellow star" when both are erased): by each allowed concept of the same kind where unnamed
    slots are sampled freely (only the first unless `every_substitute`), else by the kind's
    generic word, else drop them. Every substitute lets the distance pick the one the earlier
    erasure itself mapped to; the first alone pulled "a yellow star" toward circles."""
    variants = [prompt]
    for other in catalog.concepts.values():
        if not catalog.touches(other.name, banned):
            continue
        options: list[tuple[str, ...]] = [(catalog.generic_words.get(other.kind, ""),)]
        if catalog.open_slots:
            allowed = [c.surface_forms for c in catalog.of_kind(other.kind)
                       if not catalog.touches(c.name, banned)]
            options = allowed or options
        options = options if every_substitute else options[:1]
        rewritten: list[str] = []
        for variant in variants:
            if not other.named_in(variant):
                rewritten.append(variant)
                continue
            for substitutes in options:
                out = variant
                for slot, form in enumerate(other.surface_forms):
                    # same slot, same phrasing: "drawn as an outline" becomes "filled in"
                    out = replace_phrase(out, form, substitutes[min(slot, len(substitutes) - 1)])
                rewritten.append(out)
        variants = rewritten
    return variants


def select_mapping_targets(model: LoadedModel, concept: CatalogConcept, prompts: list[str],
                           catalog: Catalog, banned: set[str], *, k: int, seed: int,
                           unet: UNet2DConditionModel | None = None,
                           one_reading: Sequence[str] = ()) -> list[MappingChoice]:
    """p*(p) = argmin_{q ∈ candidates(p)} d_score(p, q) under the current version; NoSafeTarget
    where a prompt has no candidate. The prompts that say a phrase of `one_reading` (read
    through one trained row) are mapped alike: see `_one_reading`."""
    return select_mapping_groups(model, [(concept, prompts)], catalog, banned, k=k, seed=seed,
                                 unet=unet, one_reading=one_reading)[0]


def select_mapping_groups(model: LoadedModel, groups: list[tuple[CatalogConcept, list[str]]],
                          catalog: Catalog, banned: set[str], *, k: int, seed: int,
                          unet: UNet2DConditionModel | None = None,
                          one_reading: Sequence[str] = ()) -> list[list[MappingChoice]]:
    """`select_mapping_targets` for each (concept, its prompts) of a step, in one distance
    call, with `one_reading` across all of them: a phrase's row is shared by every concept
    of the step. A prompt in two groups gets one target, the nearest of both groups'
    candidates (each names no erased concept)."""
    pairs: list[tuple[str, str]] = []
    for concept, prompts in groups:
        for prompt in prompts:
            candidates = candidate_rewrites(prompt, concept, catalog, banned)
            if not candidates:
                erased = sorted(n for n in banned if n != concept.name)
                raise NoSafeTarget(concept.name,
                    f"cannot erase {concept.name!r}: {prompt!r} has no rewrite that names no "
                    f"erased concept (every {concept.kind} and every related concept is erased "
                    f"or contains one; erased: {', '.join(erased)})")
            pairs += [(prompt, c) for c in candidates]
    scored = _scored(model, pairs, k, seed, unet)
    alike = _one_reading(scored, one_reading)
    return [[_choice(p, alike.get(p) or min(scored[p]), len(scored[p]))
             for p in dict.fromkeys(prompts)] for _, prompts in groups]


def _choice(prompt: str, picked: tuple[float, str], candidates: int) -> MappingChoice:
    distance, target = picked
    return MappingChoice(prompt, target, distance, candidates)


def select_memory_targets(model: LoadedModel, memory: list[tuple[CatalogConcept, list[str]]],
                          catalog: Catalog, banned: set[str], *, k: int, seed: int,
                          unet: UNet2DConditionModel | None = None) -> dict[str, str]:
    """Earlier erased prompts mapped again, all in one distance call: each to its nearest
    rewrite allowed now. A prompt whose same-kind rewrites are all banned gets none (it stays
    distilled to itself), not the related-concept fallback: a character's is its own look
    ("mimi" -> "solid orange circle"), and distilling the look brought mimi back (0.375 of 32
    images at step 10 of the default sequence, bench/results/fourteenth-session-probes/)."""
    pairs = [(prompt, c) for concept, prompts in memory for prompt in prompts
             for c in candidate_rewrites(prompt, concept, catalog, banned, fallback=False)]
    return {m.forget_prompt: m.target for m in _nearest(model, pairs, k, seed, unet)}


def drawn_as(model: LoadedModel, earlier: list[tuple[str, CatalogConcept, set[str]]],
             catalog: Catalog, *, k: int, seed: int, unet: UNet2DConditionModel | None = None
             ) -> dict[str, str]:
    """What earlier erased prompts draw under the current version, all in one distance call:
    each (prompt, its concept, the concepts banned when it was erased) read as its nearest
    rewrite among those its own step could pick, so a target that names a concept erased only
    since ("a striped blue star" for "a striped blue square", star erased later) shows."""
    pairs = [(prompt, c) for prompt, concept, banned in earlier
             for c in candidate_rewrites(prompt, concept, catalog, banned, fallback=False)]
    return {m.forget_prompt: m.target for m in _nearest(model, pairs, k, seed, unet)}


def _nearest(model: LoadedModel, pairs: list[tuple[str, str]], k: int, seed: int,
             unet: UNet2DConditionModel | None) -> list[MappingChoice]:
    """For each prompt among the pairs' first members, its nearest second member."""
    return [_choice(a, min(options), len(options))
            for a, options in _scored(model, pairs, k, seed, unet).items()]


def _scored(model: LoadedModel, pairs: list[tuple[str, str]], k: int, seed: int,
            unet: UNet2DConditionModel | None) -> dict[str, list[tuple[float, str]]]:
    """Per prompt among the pairs' first members, (distance, rewrite) for each of its pairs."""
    if not pairs:
        return {}
    dist = score_distance(model, [a for a, _ in pairs], [b for _, b in pairs], k, seed, unet=unet)
    scored: dict[str, list[tuple[float, str]]] = {}
    for (a, b), d in zip(pairs, dist, strict=True):
        scored.setdefault(a, []).append((float(d), b))
    return scored


def _one_reading(scored: dict[str, list[tuple[float, str]]], phrases: Sequence[str]
                 ) -> dict[str, tuple[float, str]]:
    """Per prompt saying one of `phrases`, the rewrite that puts, in every prompt saying it,
    the same words in its place: those with the smallest mean distance over the prompts
    (`put_in_place_of`), among the words each of them may take. A phrase is read through one
    row, which cannot be two things: mapped each to its own nearest, "a outlined red triangle"
    to "a outlined red semicircle" and "a picture of a outlined red triangle" to "... diamond",
    the row drew triangles again in 6 of 32 images (drawn16, step 3). A prompt with no such
    rewrite (it says the phrase twice) keeps its nearest and asks nothing of the others; so
    does every prompt of a phrase whose prompts share no words. The longer phrases pick first,
    and a prompt keeps the first pick."""
    chosen: dict[str, tuple[float, str]] = {}
    for phrase in sorted(phrases, key=len, reverse=True):
        readings: dict[str, dict[str, tuple[float, str]]] = {}
        for a in (a for a in scored if a not in chosen and find_phrase(a, phrase)):
            for d, b in scored[a]:
                if (words := put_in_place_of(phrase, a, b)) is not None:
                    best = readings.setdefault(words, {}).get(a)
                    readings[words][a] = min(best, (d, b)) if best else (d, b)
        readable = {a for by_prompt in readings.values() for a in by_prompt}
        common = {w: r for w, r in readings.items() if len(r) == len(readable)}
        if len(readable) > 1 and common:
            words = min(common, key=lambda w: (sum(d for d, _ in common[w].values()), w))
            chosen |= common[words]
    return chosen


def context_variants(prompts: list[str], concept: CatalogConcept, catalog: Catalog,
                     banned: set[str], *, per_prompt: int, seed: int) -> list[str]:
    """More forget prompts: each request prompt with one *other* catalog concept it names swapped
    for another of that concept's kind ("a red star" -> "a green star" when erasing star), so the
    erasure holds in contexts the request did not write. Never introduces a banned concept."""
    rng = random.Random(seed)
    out: list[str] = []
    for prompt in prompts:
        swaps: list[str] = []
        for other in catalog.concepts.values():
            # the concept itself, its parts, and concepts made of it ("solid red circle" when
            # erasing "solid") are not context: swapping them would drop the concept
            if (other.name == concept.name or other.name in concept.contains
                    or catalog.touches(other.name, {concept.name})):
                continue
            for slot, form in enumerate(other.surface_forms):
                if not find_phrase(prompt, form) or any(find_phrase(f, form) for f in
                                                        concept.surface_forms):
                    continue
                for alt in catalog.of_kind(other.kind):
                    if alt.name != other.name and not catalog.touches(alt.name, banned):
                        forms = alt.surface_forms
                        swaps.append(replace_phrase(prompt, form, forms[min(slot, len(forms) - 1)]))
        fresh = [v for v in dict.fromkeys(swaps) if v not in prompts and v not in out
                 and catalog.mentions(v, {concept.name})
                 and not catalog.mentions(v, banned - {concept.name})]
        out += rng.sample(fresh, min(per_prompt, len(fresh)))
    return out


def alias_variants(prompts: list[str], concept: CatalogConcept) -> list[str]:
    """More forget prompts: each prompt naming a composite by one of its surface forms, named by
    each other one ("a solid red circle" -> "a red circle filled in"), so the erasure holds
    whatever name the catalog knows it by. Only a concept made of others: each of its forms
    names every part, a whole phrase, so one stands in for another; a style's alias is a
    postfix ("with stripes") and cannot take its adjective's place."""
    if not concept.contains:
        return []
    out: list[str] = []
    for prompt in prompts:
        for form in concept.surface_forms:
            if not find_phrase(prompt, form):
                continue
            out += [replace_phrase(prompt, form, alias) for alias in concept.surface_forms
                    if alias != form]
    return [v for v in dict.fromkeys(out) if v not in prompts]


def fixed_rewrite(prompt: str, concept: CatalogConcept, catalog: Catalog, banned: set[str]) -> str:
    """DFR's context-preserving map chosen without the model: the first allowed rewrite, favouring
    the concept's first related same-kind concept, else the generic word, else removal."""
    cands = candidate_rewrites(prompt, concept, catalog, banned, every_substitute=False)
    for name in concept.related:
        other = catalog.concepts.get(name)
        if other is None or other.kind != concept.kind:
            continue
        for c in cands:
            if any(form in c for form in other.surface_forms):
                return c
    return cands[0] if cands else ""


def catalog_frames(catalog: Catalog) -> list[str]:
    """Wordings that wrap a whole concept phrase in the catalog's prompts ("a picture of {x}",
    "{x} on a dark background"): a prompt with one concept's surface form made a slot, kept
    where the rest names no catalog concept and the slot does not follow an article (in
    "a picture of a {x}" the slot is a noun, not a phrase)."""
    frames: list[str] = []
    for concept in catalog.concepts.values():
        for prompt in concept.prompts:
            for form in concept.surface_forms:
                if not find_phrase(prompt, form):
                    continue
                frame = replace_phrase(prompt, form, "{x}")
                before, _, after = frame.partition("{x}")
                words = before.split()
                if (frame.count("{x}") == 1 and (before.strip() or after.strip())
                        and not (words and words[-1].lower() in _ARTICLES)
                        and not catalog.mentions(f"{before} {after}", set(catalog.names()))):
                    frames.append(frame)
    return list(dict.fromkeys(frames))


# words after which a slot is a noun, not a whole phrase ("one {x} in the middle")
_ARTICLES = ("a", "an", "the", "one", "two", "some", "my", "this", "that", "every", "each")


def frame_variants(prompts: list[str], catalog: Catalog, *, per_prompt: int, seed: int
                   ) -> list[str]:
    """More forget prompts: request prompts not framed already, wrapped in another wording the
    catalog uses ("a red star" -> "a drawing of a red star"), so the erasure holds in phrasings
    the request did not write (held-out templates)."""
    rng = random.Random(seed)
    frames = catalog_frames(catalog)
    out: list[str] = []
    for prompt in prompts:
        if any(_framed_by(prompt, f) for f in frames):
            continue
        fresh = [v for f in frames if (v := f.replace("{x}", prompt)) not in prompts + out]
        out += rng.sample(fresh, min(per_prompt, len(fresh)))
    return out


def _framed_by(prompt: str, frame: str) -> bool:
    before, _, after = (part.strip().lower() for part in frame.partition("{x}"))
    text = prompt.strip().lower()
    return (text.startswith(before + " ") or not before) and \
        (text.endswith(" " + after) or not after)
