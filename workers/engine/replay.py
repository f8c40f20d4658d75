"""Which prompts the student must keep answering like the teacher while a concept is erased."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from diffusers import UNet2DConditionModel

from workers.engine.concepts import Catalog, CatalogConcept
from workers.engine.distance import score_distance
from workers.engine.loading import LoadedModel

# The unconditional prompt is always replayed: classifier-free guidance leans on it, and an
# erasure that moves it changes every image (shared/research/feasibility.md §4).
UNCONDITIONAL = ""


@dataclass(frozen=True)
class ReplaySet:
    neighbours: dict[str, list[str]]   # forget concept -> retain concepts chosen for it
    prompts: list[str]
    # The prompts again, one group per replayed concept (the unconditional prompt its own), so
    # a concept with few prompts (a composite has 2, a colour 6) is replayed as often as any.
    groups: list[list[str]] = field(default_factory=list)

    @classmethod
    def nothing(cls, forget: list[CatalogConcept]) -> ReplaySet:
        return cls({c.name: [] for c in forget}, [])


def retain_pool(catalog: Catalog, banned: set[str], extra: list[CatalogConcept]
                ) -> list[CatalogConcept]:
    """Concepts that must survive: neither erased nor containing an erased concept."""
    pool = [c for c in catalog.concepts.values() if not catalog.touches(c.name, banned)]
    return pool + [c for c in extra if c.name not in catalog and c.name not in banned]


def retained_prompts(catalog: Catalog, banned: set[str], extra: list[CatalogConcept]
                     ) -> list[str]:
    """Every prompt of every concept that must survive, the unconditional one first."""
    return _allowed_prompts(retain_pool(catalog, banned, extra), catalog, banned)


def _allowed_prompts(concepts: list[CatalogConcept], catalog: Catalog, banned: set[str]
                     ) -> list[str]:
    prompts = [p for c in concepts for p in c.prompts if not catalog.mentions(p, banned)]
    return list(dict.fromkeys([UNCONDITIONAL] + prompts))


def local_replay_set(model: LoadedModel, forget: list[CatalogConcept], catalog: Catalog,
                     banned: set[str], *, top_k: int, k: int, seed: int,
                     protect: list[CatalogConcept] | None = None,
                     unet: UNet2DConditionModel | None = None) -> ReplaySet:
    """Rank retain concepts by d_score(forget name, retain name); replay the top-k's prompts.

    Concepts a request asks to protect are always replayed.
    """
    protect = protect or []
    pool = retain_pool(catalog, banned, protect)
    neighbours: dict[str, list[str]] = {}
    chosen: list[CatalogConcept] = list(protect)
    for concept in forget:
        if not pool:
            neighbours[concept.name] = []
            continue
        dist = score_distance(model, [concept.name] * len(pool), [c.name for c in pool], k, seed,
                              unet=unet)
        ranked = [pool[i] for i in dist.argsort().tolist()][:top_k]
        neighbours[concept.name] = [c.name for c in ranked]
        chosen += ranked
    chosen = list({c.name: c for c in chosen}.values())
    groups = [[UNCONDITIONAL]] + [g for c in chosen
                                  if (g := _allowed_prompts([c], catalog, banned)[1:])]
    prompts = list(dict.fromkeys(p for g in groups for p in g))
    return ReplaySet(neighbours, prompts, groups)


def global_replay_set(forget: list[CatalogConcept], catalog: Catalog, banned: set[str], *,
                      n_prompts: int, seed: int) -> ReplaySet:
    """DFR v1's replay: random retain prompts from the whole catalog, no model scoring."""
    prompts = retained_prompts(catalog, banned, [])
    rng = random.Random(seed)
    picked = [UNCONDITIONAL] + rng.sample(prompts[1:], min(n_prompts, len(prompts) - 1))
    return ReplaySet({c.name: [] for c in forget}, picked, [[p] for p in picked])
