"""The concept world: attributes, characters, prompt templates and the concept catalog.

A scene is one object: a shape drawn in a colour with a texture. Characters are proper nouns bound
to one fixed (shape, colour, texture) and drawn with a face (two eyes), so a character is a
different image from the plain object it shares every attribute with.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

SHAPE_FAMILIES: dict[str, tuple[str, ...]] = {
    "round": ("circle", "ellipse", "semicircle"),
    "angular": ("square", "diamond", "rectangle"),
    "pointed": ("triangle", "star"),
}
SHAPES: tuple[str, ...] = tuple(s for family in SHAPE_FAMILIES.values() for s in family)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (235, 225, 40),
    "green": (40, 190, 60),
    "blue": (40, 90, 235),
    "purple": (150, 50, 210),
}
# Close pairs: their hues sit next to each other, so erasing one risks the other.
CLOSE_COLOURS: tuple[tuple[str, str], ...] = (("red", "orange"), ("orange", "yellow"),
                                              ("blue", "purple"))

TEXTURES: tuple[str, ...] = ("solid", "striped", "outlined")
TEXTURE_WORDS: dict[str, str] = {"solid": "solid", "striped": "striped", "outlined": "outlined"}
TEXTURE_PHRASES: dict[str, str] = {
    "solid": "filled in",
    "striped": "with stripes",
    "outlined": "drawn as an outline",
}


@dataclass(frozen=True)
class Character:
    name: str
    shape: str
    colour: str
    texture: str


CHARACTERS: tuple[Character, ...] = (
    Character("zorbo", "circle", "red", "solid"),
    Character("mimi", "circle", "orange", "solid"),
    Character("blip", "square", "blue", "striped"),
    Character("quax", "square", "purple", "striped"),
    Character("tikka", "star", "yellow", "solid"),
    Character("pyra", "triangle", "red", "outlined"),
    Character("gloop", "ellipse", "green", "striped"),
)
CHARACTER_BY_NAME: dict[str, Character] = {c.name: c for c in CHARACTERS}


@dataclass(frozen=True)
class Scene:
    """What an image shows; `character` is None for a plain object."""

    shape: str
    colour: str
    texture: str
    character: str | None = None

    @property
    def words(self) -> str:
        """"striped blue square blip": texture, colour, shape, then the character if any."""
        return " ".join(p for p in (self.texture, self.colour, self.shape, self.character) if p)


# Templates. "{x}" is filled by a concept's surface form. The first group is what a takedown
# request would write; the held-out group is never given to the engine (evaluation only).
CHARACTER_TEMPLATES = ("{x}", "a picture of {x}", "{x} on a dark background", "a drawing of {x}")
CHARACTER_HELDOUT = ("an image showing {x}", "{x} in the middle")
OBJECT_TEMPLATES = (
    "a {texture} {colour} {shape}",
    "a {colour} {shape} {phrase}",
    "a picture of a {texture} {colour} {shape}",
    "a {colour} {shape}",
    "a {texture} {shape}",
    "a {shape}",
)
OBJECT_HELDOUT = ("an image showing a {texture} {colour} {shape}",
                  "one {colour} {shape} in the middle")


def character_prompt(name: str, rng: random.Random, heldout: bool = False) -> str:
    templates = CHARACTER_HELDOUT if heldout else CHARACTER_TEMPLATES
    return rng.choice(templates).format(x=name)


def object_prompt(scene: Scene, template: str) -> str:
    return template.format(
        texture=TEXTURE_WORDS[scene.texture],
        colour=scene.colour,
        shape=scene.shape,
        phrase=TEXTURE_PHRASES[scene.texture],
    )


def random_scene(rng: random.Random, character_share: float = 0.25) -> Scene:
    if rng.random() < character_share:
        c = rng.choice(CHARACTERS)
        return Scene(c.shape, c.colour, c.texture, c.name)
    return Scene(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(TEXTURES))


# Generic words: each stands for "any" value of one attribute, so they are safe mapping targets.
GENERIC_WORDS: dict[str, str] = {"shape": "shape", "colour": "colourful", "style": "simple",
                                 "character": "creature"}
GENERIC_TEMPLATES = ("a {colour} shape", "a colourful {shape}", "a simple {colour} {shape}")
CREATURE_PROMPTS = ("a creature", "a picture of a creature")


def training_prompt(scene: Scene, rng: random.Random) -> str:
    """A prompt the scene satisfies; partial templates teach the model each attribute alone."""
    if scene.character is not None:
        if rng.random() < 0.1:
            return rng.choice(CREATURE_PROMPTS)
        return character_prompt(scene.character, rng, heldout=rng.random() < 0.3)
    templates = OBJECT_TEMPLATES + OBJECT_HELDOUT + GENERIC_TEMPLATES
    weights = (4, 2, 1, 2, 1, 1, 1, 1, 0.5, 0.5, 0.5)
    return object_prompt(scene, rng.choices(templates, weights=weights)[0])


def vocabulary_corpus() -> list[str]:
    """Every prompt the world can produce, for building the tokenizer."""
    texts = [t.format(x=c.name) for c in CHARACTERS
             for t in CHARACTER_TEMPLATES + CHARACTER_HELDOUT]
    texts += list(CREATURE_PROMPTS)
    for shape in SHAPES:
        for colour in COLOURS:
            for texture in TEXTURES:
                scene = Scene(shape, colour, texture)
                texts += [object_prompt(scene, t)
                          for t in OBJECT_TEMPLATES + OBJECT_HELDOUT + GENERIC_TEMPLATES]
    return texts


# ---------------------------------------------------------------------------------------------
# Catalog


@dataclass(frozen=True)
class Concept:
    """A catalog entry. `attributes` are what the judge must see for an image to count as it."""

    name: str
    kind: str  # shape | colour | style | character | composite
    related: tuple[str, ...]
    prompts: tuple[str, ...]
    heldout_prompts: tuple[str, ...]
    attributes: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "related": list(self.related),
                "prompts": list(self.prompts), "heldout_prompts": list(self.heldout_prompts),
                "aliases": list(self.aliases or (self.name,)),
                "contains": [o.name for o in CATALOG if o is not self and contains(self, o)]}


def _family_of(shape: str) -> str:
    return next(f for f, members in SHAPE_FAMILIES.items() if shape in members)


def _close_colours(colour: str) -> list[str]:
    return [b if a == colour else a for a, b in CLOSE_COLOURS if colour in (a, b)]


def _shape_concept(shape: str) -> Concept:
    family = [s for s in SHAPE_FAMILIES[_family_of(shape)] if s != shape]
    prompts = tuple(
        f"a {c} {shape}" for c in ("red", "blue", "yellow")
    ) + (f"a {shape}", f"a striped {shape}", f"a green {shape} drawn as an outline")
    heldout = (f"an image showing a solid purple {shape}", f"one orange {shape} in the middle")
    chars = [c.name for c in CHARACTERS if c.shape == shape]
    return Concept(shape, "shape", tuple(family + chars), prompts, heldout, {"shape": shape})


def _colour_concept(colour: str) -> Concept:
    prompts = tuple(f"a {colour} {s}" for s in ("circle", "square", "triangle")) + (
        f"a solid {colour} diamond", f"a {colour} star with stripes", f"a {colour} ellipse")
    heldout = (f"an image showing a striped {colour} rectangle",
               f"one {colour} semicircle in the middle")
    chars = [c.name for c in CHARACTERS if c.colour == colour]
    return Concept(colour, "colour", tuple(_close_colours(colour) + chars), prompts, heldout,
                   {"colour": colour})


def _style_concept(texture: str) -> Concept:
    word, phrase = TEXTURE_WORDS[texture], TEXTURE_PHRASES[texture]
    prompts = (f"a {word} red circle", f"a {word} blue square", f"a {word} yellow star",
               f"a green triangle {phrase}", f"a purple diamond {phrase}", f"a {word} ellipse")
    heldout = (f"an image showing a {word} orange semicircle",
               f"a picture of a {word} green rectangle")
    others = [t for t in TEXTURES if t != texture]
    chars = [c.name for c in CHARACTERS if c.texture == texture]
    return Concept(texture, "style", tuple(others + chars), prompts, heldout, {"texture": texture},
                   (word, phrase))


def _character_concept(c: Character) -> Concept:
    related = [o.name for o in CHARACTERS
               if o != c and sum((o.shape == c.shape, o.colour == c.colour,
                                  o.texture == c.texture)) >= 2]
    related.append(composite_name(c.shape, c.colour, c.texture))
    prompts = tuple(t.format(x=c.name) for t in CHARACTER_TEMPLATES)
    heldout = tuple(t.format(x=c.name) for t in CHARACTER_HELDOUT)
    return Concept(c.name, "character", tuple(related), prompts, heldout, {"character": c.name})


def composite_name(shape: str, colour: str, texture: str) -> str:
    return f"{TEXTURE_WORDS[texture]} {colour} {shape}"


def _composite_concept(c: Character) -> Concept:
    """The plain object a character is drawn as: the closest neighbour a character has."""
    name = composite_name(c.shape, c.colour, c.texture)
    scene = Scene(c.shape, c.colour, c.texture)
    prompts = tuple(object_prompt(scene, t) for t in (OBJECT_TEMPLATES[0], OBJECT_TEMPLATES[2]))
    heldout = tuple(object_prompt(scene, t) for t in (OBJECT_TEMPLATES[1], OBJECT_HELDOUT[0]))
    return Concept(name, "composite", (c.name, c.shape, c.colour), prompts, heldout,
                   {"shape": c.shape, "colour": c.colour, "texture": c.texture,
                    "character": "none"},
                   (name, f"{c.colour} {c.shape} {TEXTURE_PHRASES[c.texture]}"))


def build_catalog() -> list[Concept]:
    concepts = [_shape_concept(s) for s in SHAPES]
    concepts += [_colour_concept(c) for c in COLOURS]
    concepts += [_style_concept(t) for t in TEXTURES]
    concepts += [_character_concept(c) for c in CHARACTERS]
    concepts += [_composite_concept(c) for c in CHARACTERS]
    return concepts


CATALOG: list[Concept] = build_catalog()
CONCEPT_BY_NAME: dict[str, Concept] = {c.name: c for c in CATALOG}


def catalog_json() -> dict[str, object]:
    """The catalog as the engine and the service read it (catalog.json in the model folder)."""
    return {"concepts": [c.as_json() for c in CATALOG], "generic_words": GENERIC_WORDS,
            # "a circle" is drawn in any colour: leaving a slot unnamed samples every value.
            "open_slots": True}


def contains(outer: Concept, inner: Concept) -> bool:
    """True when every image of `outer` is also an image of `inner` (e.g. zorbo contains circle).

    Retention sets exclude concepts that contain an erased one: once "circle" is erased, a
    character drawn as a circle can no longer be expected to appear.
    """
    if outer.name == inner.name:
        return True
    if outer.kind == "character":
        c = CHARACTER_BY_NAME[outer.name]
        attrs = {"shape": c.shape, "colour": c.colour, "texture": c.texture, "character": c.name}
    else:
        attrs = dict(outer.attributes)
    return all(attrs.get(k) == v for k, v in inner.attributes.items())


def scene_for(name: str, rng: random.Random) -> Scene:
    """A random scene that satisfies concept `name` (its other attributes drawn at random)."""
    concept = CONCEPT_BY_NAME[name]
    if concept.kind == "character":
        ch = CHARACTER_BY_NAME[name]
        return Scene(ch.shape, ch.colour, ch.texture, ch.name)
    a = concept.attributes
    return Scene(a.get("shape", rng.choice(SHAPES)), a.get("colour", rng.choice(list(COLOURS))),
                 a.get("texture", rng.choice(TEXTURES)))
