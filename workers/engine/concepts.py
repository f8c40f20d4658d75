"""A model's concept catalog as the engine sees it: names, kinds, surface forms, containment.

A model folder may carry `catalog.json`: a list of {name, kind, related, prompts,
heldout_prompts?, aliases?, contains?}. `aliases` are the phrasings of the concept inside prompts
(position i of one concept's aliases is interchangeable with position i of another's);
`contains` names the concepts every image of this one also shows (a character contains its shape).
A top-level `"open_slots": true` says that a prompt which leaves a kind unnamed samples *every*
value of it (the concept world draws a random colour for "a circle"), so a generic word or the
removal of a concept is not a safe mapping target there: the erased value would still be drawn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class CatalogConcept:
    name: str
    kind: str
    related: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    heldout_prompts: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()

    @property
    def surface_forms(self) -> tuple[str, ...]:
        return self.aliases or (self.name,)

    def named_in(self, prompt: str) -> bool:
        """True when the prompt names this concept by any of its surface forms."""
        return any(find_phrase(prompt, form) for form in self.surface_forms)


@dataclass
class Catalog:
    concepts: dict[str, CatalogConcept] = field(default_factory=dict)
    generic_words: dict[str, str] = field(default_factory=dict)
    open_slots: bool = False

    def __getitem__(self, name: str) -> CatalogConcept:
        return self.concepts[name]

    def __contains__(self, name: object) -> bool:
        return name in self.concepts

    def names(self) -> list[str]:
        return list(self.concepts)

    def of_kind(self, kind: str) -> list[CatalogConcept]:
        return [c for c in self.concepts.values() if c.kind == kind]

    def touches(self, concept: str, erased: set[str]) -> bool:
        """True when `concept` is, or contains, an erased concept.

        Rule for retention sets: a concept that contains an erased one (a character whose shape
        was erased) can no longer be expected to appear, so it is neither replayed nor scored.
        """
        c = self.concepts.get(concept)
        return concept in erased or (c is not None and bool(erased & set(c.contains)))

    def named_by_parts(self, concept: CatalogConcept) -> bool:
        """True when every word of every name of `concept` is a word of a concept it contains
        ("solid red circle", "red circle filled in"; not "mimi"): no word of its own."""
        parts = [self.concepts[n] for n in concept.contains if n in self.concepts]
        words = {w for part in parts for form in part.surface_forms for w in form.lower().split()}
        return bool(parts) and all(w in words for form in concept.surface_forms
                                   for w in form.lower().split())

    def mentions(self, prompt: str, names: set[str]) -> bool:
        """True when the prompt names any of `names`, or a concept that contains one of them."""
        for concept in self.concepts.values():
            if concept.name in names or names & set(concept.contains):
                if concept.named_in(prompt):
                    return True
        return any(find_phrase(prompt, n) for n in names)


def find_phrase(prompt: str, phrase: str) -> re.Match[str] | None:
    """Where `phrase` occurs in `prompt` as whole words, ignoring case."""
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", prompt, flags=re.IGNORECASE)


def put_in_place_of(phrase: str, prompt: str, target: str) -> str | None:
    """The words `target` puts where `prompt` says `phrase`, the rest of it unchanged ("a
    picture of a outlined red diamond" for "outlined red triangle" in "a picture of a outlined
    red triangle": "outlined red diamond"); None where it changes more, or drops the phrase."""
    found = find_phrase(prompt, phrase)
    if found is None:
        return None
    prefix, suffix = prompt[:found.start()], prompt[found.end():]
    if not (target.startswith(prefix) and target.endswith(suffix)
            and len(target) > len(prefix) + len(suffix)):
        return None
    return target[len(prefix):len(target) - len(suffix)].strip() or None


def replace_phrase(prompt: str, phrase: str, replacement: str) -> str:
    out = re.sub(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", replacement, prompt,
                 flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", out).strip()


def load_catalog(model_folder: Path) -> Catalog:
    """The folder's catalog.json, or an empty catalog (an open vocabulary) when there is none."""
    path = Path(model_folder) / "catalog.json"
    if not path.is_file():
        return Catalog()
    raw = json.loads(path.read_text())
    entries = raw["concepts"] if isinstance(raw, dict) else raw
    generic = raw.get("generic_words", {}) if isinstance(raw, dict) else {}
    open_slots = bool(raw.get("open_slots", False)) if isinstance(raw, dict) else False
    concepts = {}
    for e in entries:
        concepts[e["name"]] = CatalogConcept(
            name=e["name"], kind=e["kind"], related=tuple(e.get("related", ())),
            prompts=tuple(e.get("prompts", ())),
            heldout_prompts=tuple(e.get("heldout_prompts", ())),
            aliases=tuple(e.get("aliases", ())), contains=tuple(e.get("contains", ())))
    return Catalog(concepts, generic, open_slots)


def ad_hoc_concept(name: str, prompts: list[str] | None, kind: str = "other") -> CatalogConcept:
    """A concept the catalog does not list (open vocabulary): its own prompts, or templates."""
    prompts = prompts or [name, f"a picture of {name}", f"an image of {name}"]
    return CatalogConcept(name=name, kind=kind, prompts=tuple(prompts))
