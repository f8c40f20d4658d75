"""Measuring a concept-world model with the judge: per-concept rates and a quality distance."""

from __future__ import annotations

import random
import time
import zlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from scipy import linalg

from workers.conceptworld.judge import Judge, Verdicts
from workers.conceptworld.render import render_dataset, render_scene
from workers.conceptworld.world import (
    CHARACTER_TEMPLATES,
    CONCEPT_BY_NAME,
    OBJECT_TEMPLATES,
    Scene,
    object_prompt,
)
from workers.engine.loading import LoadedModel
from workers.engine.sampling import generate

EVAL_SEED = 20_261_127
QUALITY_REFERENCE_SEED = 4_242
# Renders a read scene's reference moments are taken from (`WorldEvaluator.scene_moments`).
REFERENCE_RENDERS = 64
# The base model's drawings of a scene its own typicality there is taken from
# (`WorldEvaluator.drawn_typicality`).
SCENE_DRAWINGS = 32


@dataclass
class GeneratedSet:
    """Images generated for a list of concepts, with the judge's reading of each."""

    concepts: list[str]
    per_concept: int
    images: torch.Tensor
    verdicts: Verdicts
    seconds: float
    prompts: list[str] = field(default_factory=list)  # each image's, when drawn from prompts
    seeds: list[int] = field(default_factory=list)    # and its seed

    def rows(self, concept: str) -> slice:
        i = self.concepts.index(concept)
        return slice(i * self.per_concept, (i + 1) * self.per_concept)

    def rows_of(self, concepts: list[str]) -> np.ndarray:
        """The image rows of `concepts`, in their order."""
        return np.concatenate([np.arange(self.rows(n).start, self.rows(n).stop)
                               for n in concepts])

    def rate(self, concept: str, judged_as: str | None = None) -> float:
        """Share of `concept`'s images that the judge assigns to `judged_as` (default: itself)."""
        rows = self.rows(concept)
        shows = self.verdicts.shows(CONCEPT_BY_NAME[judged_as or concept])
        return float(shows[rows].float().mean())


@dataclass(frozen=True, eq=False)
class Reading:
    """Judge features of some images and the scene the judge reads in each, in image order."""

    features: np.ndarray
    scenes: list[Scene]

    def take(self, pick: np.ndarray) -> Reading:
        return Reading(self.features[pick], [self.scenes[i] for i in pick.tolist()])


@dataclass(frozen=True)
class QualityComparison:
    """A version's images against the base's on the same prompts and seeds: the Fréchet
    quality distance and the mean per-image typicality of each, and 90 % intervals of their
    ratios from the same paired bootstrap draws."""

    quality: float
    base_quality: float
    quality_ratio_interval: tuple[float, float]
    typicality: float
    base_typicality: float
    typicality_ratio_interval: tuple[float, float]

    @property
    def quality_ratio(self) -> float:
        return self.quality / self.base_quality

    @property
    def typicality_ratio(self) -> float:
        return self.typicality / self.base_typicality


@dataclass
class WorldEvaluator:
    model: LoadedModel
    judge: Judge
    per_concept: int = 8
    # Images per erased concept for the forget accuracies (request and held-out templates):
    # with 8 a 5 % bar can only read "no image at all". None = per_concept.
    forget_per_concept: int | None = None
    steps: int = 20
    guidance: float | None = None  # the model folder's default (lethe.json)
    _reference: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _scene_cache: dict[Scene, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict,
                                                                     repr=False)
    # not an init field, so an evaluator `replace`d onto a version's view starts empty
    _drawn_cache: dict[Scene, Reading] = field(default_factory=dict, init=False, repr=False)

    def generate_for(self, concepts: list[str], unet: UNet2DConditionModel | None = None, *,
                     heldout: bool = False, per_concept: int | None = None) -> GeneratedSet:
        """`per_concept` images per concept (default the evaluator's), prompts cycling through
        its (held-out) templates, fixed seeds: the same call on the same weights gives the same
        images."""
        count = per_concept or self.per_concept
        prompts, seeds = [], []
        for ci, name in enumerate(concepts):
            concept = CONCEPT_BY_NAME[name]
            templates = concept.heldout_prompts if heldout else concept.prompts
            for j in range(count):
                prompts.append(templates[j % len(templates)])
                seeds.append(EVAL_SEED + 1000 * ci + j)
        clock = time.perf_counter()
        images = generate(self.model, prompts, seeds, steps=self.steps, guidance=self.guidance,
                          unet=unet, batch_size=128)
        seconds = time.perf_counter() - clock
        return GeneratedSet(concepts, count, images, self.judge.read(images), seconds, prompts,
                            seeds)

    def quality(self, images: torch.Tensor) -> float:
        """Fréchet distance between judge features of `images` and of 1,000 fresh renders."""
        mu_r, cov_r = self._reference_stats()
        feats = self.judge.features(images).double().numpy()
        return _frechet_stats(feats.mean(0), np.cov(feats, rowvar=False), mu_r, cov_r)

    def retained_quality(self, gen: GeneratedSet, names: list[str]) -> float:
        """Fréchet distance, in judge features, between the images generated for `names` and
        clean renders of what the judge reads in each image: how well the kept concepts are
        drawn, whatever values of their unnamed attributes they show. An erasure is meant to
        change which values are drawn ("outlined" no longer drawn when asked for), not how
        well; the accuracy metrics score the first, this scores the second (a model that draws
        the wrong concept cleanly scores well here and badly there)."""
        rows = gen.rows_of(names)
        return self.retained_quality_of_rows(gen, rows)

    def retained_quality_of_rows(self, gen: GeneratedSet, rows: np.ndarray) -> float:
        """`retained_quality` over chosen image rows of `gen` instead of whole concepts."""
        return self.quality_of(self.reading(gen, rows))

    def reading(self, gen: GeneratedSet, rows: np.ndarray) -> Reading:
        """The judge's features of `gen`'s images `rows` and what it reads in each, as scenes."""
        features = self.judge.features(gen.images[torch.tensor(rows.tolist(), dtype=torch.long)]
                                       ).double().numpy()
        return Reading(features, _scenes(gen.verdicts, rows.tolist()))

    def read_images(self, images: torch.Tensor) -> Reading:
        """`reading` of images drawn outside a `GeneratedSet` (probes)."""
        return Reading(self.judge.features(images).double().numpy(),
                       _scenes(self.judge.read(images), list(range(len(images)))))

    def quality_of(self, reading: Reading) -> float:
        """`retained_quality` of the images read. The reference is the mixture of the read
        scenes' render distributions, one component per image; its moments come from each
        scene's own (`scene_moments`). Four random renders an image instead made the distance
        of the same images vary by a quarter with the draw (bench/results/twenty-ninth-
        session/)."""
        mean_term, covariance_term = self.quality_terms(reading)
        return mean_term + covariance_term

    def quality_terms(self, reading: Reading) -> tuple[float, float]:
        """`quality_of`'s two terms: the mean term ‖μ − μ_ref‖², the squared length of the
        images' mean residual from their read scenes' renders (residuals in different
        directions cancel in it), and the covariance term."""
        moments = [self.scene_moments(s) for s in reading.scenes]
        means = np.stack([m for m, _ in moments])
        # within-scene spread plus the spread of the scenes' means
        cov = np.mean([c for _, c in moments], axis=0) + np.cov(means, rowvar=False, bias=True)
        feats = reading.features
        return _frechet_terms(feats.mean(0), np.cov(feats, rowvar=False), means.mean(0), cov)

    def scene_moments(self, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the judge's features over `REFERENCE_RENDERS` renders of
        `scene` (jittered position, size, rotation, colour), seeded by the scene itself."""
        if scene not in self._scene_cache:
            seed = zlib.crc32(_scene_key(scene).encode()) ^ QUALITY_REFERENCE_SEED
            rng = random.Random(seed)
            renders = np.stack([render_scene(scene, rng) for _ in range(REFERENCE_RENDERS)])
            x = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 255
            feats = self.judge.features(x).double().numpy()
            self._scene_cache[scene] = (feats.mean(0), np.cov(feats, rowvar=False))
        return self._scene_cache[scene]

    def typicality(self, reading: Reading) -> np.ndarray:
        """Per image: its squared distance, in judge features, to the mean of clean renders of
        the scene the judge reads in it, over the renders' own mean squared distance (tr Σ).
        About 1 for an image drawn like a render, more the worse it is drawn."""
        moments = [self.scene_moments(s) for s in reading.scenes]
        return np.array([((f - mu) ** 2).sum() / np.trace(cov)
                         for f, (mu, cov) in zip(reading.features, moments, strict=True)])

    def drawn_typicality(self, scenes: list[Scene]) -> np.ndarray:
        """Per scene: this evaluator's model's own mean typicality on it (`drawings_of`).
        Some scenes are harder to draw than others: the base draws "a red star" less like its
        renders than "a red square", so a version that draws "a red square" as a red star
        moves the typicality ratio without drawing anything worse than the base does."""
        unique = list(dict.fromkeys(scenes))
        own = {s: float(self.typicality(r).mean())
               for s, r in zip(unique, self.drawings_of(unique), strict=True)}
        return np.array([own[s] for s in scenes])

    def drawings_of(self, scenes: list[Scene]) -> list[Reading]:
        """Per scene: this evaluator's model's `SCENE_DRAWINGS` drawings from prompts naming
        the whole scene (seeded by the scene), those the judge reads as it (all of them for a
        scene it never draws as asked for). Drawn once per evaluator; an evaluator `replace`d
        onto another model starts with none."""
        missing = sorted(set(scenes) - set(self._drawn_cache), key=_scene_key)
        if missing:
            prompts = [p for s in missing for p in _scene_prompts(s)]
            seeds = [zlib.crc32(_scene_key(s).encode()) % 1_000_000 * 100 + j
                     for s in missing for j in range(SCENE_DRAWINGS)]
            reading = self.read_images(generate(self.model, prompts, seeds, steps=self.steps,
                                                guidance=self.guidance, batch_size=128))
            for i, scene in enumerate(missing):
                block = np.arange(i * SCENE_DRAWINGS, (i + 1) * SCENE_DRAWINGS)
                own = block[[reading.scenes[j] == scene for j in block]]
                self._drawn_cache[scene] = reading.take(own if len(own) else block)
        return [self._drawn_cache[s] for s in scenes]

    def compare_quality(self, after: GeneratedSet, base: GeneratedSet, names: list[str], *,
                        draws: int = 200, seed: int = 0) -> QualityComparison:
        """`after` against `base` on `names` (same prompts and seeds). The intervals come from
        paired bootstrap draws: each concept's images resampled, the same draw for both sets.

        Fréchet: the basic interval (2r − q95, 2r − q5) around the ratio r, since a resample
        repeats images, which raises both distances alike and pulls its ratio toward 1.
        Typicality: a mean over images, so an image drawn exactly as the base drew it scores
        exactly the same; only the images a version changed move its ratio, and no reference
        bias shared by both sets dilutes or inflates it (the Fréchet ratio's weakness, README).
        """
        if after.concepts != base.concepts or after.per_concept != base.per_concept:
            raise ValueError("the two sets are not of the same concepts at the same count")
        rows = base.rows_of(names)
        return self.compare_readings(self.reading(after, rows), self.reading(base, rows),
                                     len(names), base.per_concept, draws=draws, seed=seed)

    def compare_readings(self, a: Reading, b: Reading, concepts: int, per_concept: int, *,
                         draws: int = 200, seed: int = 0) -> QualityComparison:
        """`compare_quality` of two readings of `concepts` blocks of `per_concept` images."""
        typical_a, typical_b = self.typicality(a), self.typicality(b)
        rng = np.random.default_rng(seed)
        picks = [paired_draw(concepts, per_concept, rng) for _ in range(draws)]
        quality_a, quality_b = self.quality_of(a), self.quality_of(b)
        frechet = [self.quality_of(a.take(p)) / self.quality_of(b.take(p)) for p in picks]
        typical = [typical_a[p].mean() / typical_b[p].mean() for p in picks]
        return QualityComparison(
            quality_a, quality_b, _basic_interval(quality_a / quality_b, frechet),
            float(typical_a.mean()), float(typical_b.mean()),
            _basic_interval(typical_a.mean() / typical_b.mean(), typical))

    def _reference_stats(self) -> tuple[np.ndarray, np.ndarray]:
        if self._reference is None:
            renders, _ = render_dataset(1000, seed=QUALITY_REFERENCE_SEED)
            x = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 255
            feats = self.judge.features(x).double().numpy()
            self._reference = (feats.mean(0), np.cov(feats, rowvar=False))
        return self._reference


def _scene_key(scene: Scene) -> str:
    return f"{scene.shape}|{scene.colour}|{scene.texture}|{scene.character}"


def _scene_prompts(scene: Scene) -> list[str]:
    """`SCENE_DRAWINGS` prompts naming the whole scene, cycling through the request templates
    that do (a character by its name)."""
    if scene.character is not None:
        templates = [t.format(x=scene.character) for t in CHARACTER_TEMPLATES]
    else:
        templates = [object_prompt(scene, t) for t in OBJECT_TEMPLATES[:3]]
    return [templates[j % len(templates)] for j in range(SCENE_DRAWINGS)]


def _scenes(verdicts: Verdicts, rows: list[int]) -> list[Scene]:
    labels = {head: verdicts.labels(head) for head in ("shape", "colour", "texture", "character")}
    return [Scene(labels["shape"][i], labels["colour"][i], labels["texture"][i],
                  None if labels["character"][i] == "none" else labels["character"][i])
            for i in rows]


def paired_draw(concepts: int, per_concept: int, rng: np.random.Generator) -> np.ndarray:
    """One bootstrap draw of positions in a set of `concepts` blocks of `per_concept` images:
    each block resampled within itself, so every concept keeps its share."""
    return np.concatenate([i * per_concept + rng.integers(0, per_concept, per_concept)
                           for i in range(concepts)])


def _basic_interval(ratio: float, ratios: list[float]) -> tuple[float, float]:
    """The basic bootstrap 90 % interval (2r − q95, 2r − q5) around `ratio`."""
    q5, q95 = np.percentile(ratios, [5, 95])
    return float(2 * ratio - q95), float(2 * ratio - q5)


def _frechet_stats(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
                   ) -> float:
    """‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½)."""
    mean_term, covariance_term = _frechet_terms(mu_a, cov_a, mu_b, cov_b)
    return mean_term + covariance_term


def _frechet_terms(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
                   ) -> tuple[float, float]:
    """(‖μ_a − μ_b‖², tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½))."""
    covmean = np.real(linalg.sqrtm(cov_a @ cov_b))  # no `disp`: SciPy 1.18 dropped it
    return float(((mu_a - mu_b) ** 2).sum()), float(np.trace(cov_a + cov_b - 2 * covmean))


def retention_sets(erased: list[str]) -> tuple[list[str], list[str]]:
    """(related, general): catalog neighbours of erased concepts, and every other concept.

    Concepts that are, or contain, an erased concept belong to neither (see `world.contains`).
    """
    from workers.conceptworld.world import CATALOG, contains

    erased_concepts = [CONCEPT_BY_NAME[e] for e in erased]
    alive = [c.name for c in CATALOG
             if not any(contains(c, e) for e in erased_concepts)]
    related = sorted({n for e in erased_concepts for n in e.related if n in alive})
    general = [n for n in alive if n not in related]
    return related, general


def mean_rate(gen: GeneratedSet, names: list[str]) -> float:
    return float(np.mean([gen.rate(n) for n in names])) if names else float("nan")


def retention(after: GeneratedSet, base: GeneratedSet, names: list[str]) -> float:
    """Mean accuracy on `names` over the base model's; NaN where the base's is 0."""
    reference = mean_rate(base, names)
    return mean_rate(after, names) / reference if reference else float("nan")


@dataclass(frozen=True)
class KeptCheck(QualityComparison):
    """Retention and drawing quality of the kept concepts against the base (`kept_check`)."""

    images: int
    templates: str
    related_retention: float
    general_retention: float
    # share of the kept images the version draws differently from the base at all
    images_changed: float
    largest_losses: dict[str, float]
    quality_worse_by_concept: dict[str, float]
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def kept_check(evaluator: WorldEvaluator, unet: UNet2DConditionModel | None, erased: list[str],
               per_concept: int, *, heldout: bool = False, base: GeneratedSet | None = None,
               view: LoadedModel | None = None) -> KeptCheck:
    """Retention and drawing quality of the concepts kept after erasing `erased`, at
    `per_concept` images each, against the base model on the same prompts and seeds.

    The step metrics draw 8 images a concept; over ~25 kept concepts the Fréchet distance is
    then mostly small-sample bias plus noise of about ±0.15, so a 10 % quality bar needs more.
    `base`: the base model's images of the same kept concepts, when the caller has them.
    `view`: the version's model view (its token rows) where it has one; `evaluator` holds the
    base model, which draws `base`.
    """
    related, general = retention_sets(erased)
    kept = related + general
    if base is None:
        base = evaluator.generate_for(kept, None, heldout=heldout, per_concept=per_concept)
    if base.concepts != kept or base.per_concept != per_concept:
        raise ValueError("base images are not of the kept concepts at this image count")
    judged = evaluator if view is None else replace(evaluator, model=view)
    after = judged.generate_for(kept, unet, heldout=heldout, per_concept=per_concept)
    losses = sorted((after.rate(n) - base.rate(n), n) for n in kept)
    rows = base.rows_of(kept)
    read_after, read_base = evaluator.reading(after, rows), evaluator.reading(base, rows)
    # each concept's images alone: biased upward at this count, but base and version share it
    blocks = [np.arange(i * per_concept, (i + 1) * per_concept) for i in range(len(kept))]
    worse = sorted((evaluator.quality_of(read_after.take(block))
                    - evaluator.quality_of(read_base.take(block)), n)
                   for n, block in zip(kept, blocks, strict=True))[::-1]
    changed = (after.images != base.images).flatten(1).any(1)
    return KeptCheck(
        images=per_concept,
        templates="held-out" if heldout else "request",
        related_retention=retention(after, base, related),
        general_retention=retention(after, base, general),
        **asdict(evaluator.compare_readings(read_after, read_base, len(kept), per_concept)),
        images_changed=float(changed.double().mean()),
        largest_losses={n: round(d, 3) for d, n in losses[:4] if d < 0},
        quality_worse_by_concept={n: round(d, 2) for d, n in worse[:6] if d > 0},
        seconds=after.seconds,
    )


def step_metrics(evaluator: WorldEvaluator, unet: UNet2DConditionModel | None, erased: list[str],
                 base: GeneratedSet, everything: GeneratedSet | None = None) -> dict[str, object]:
    """Forget, related and general accuracy of `unet` after erasing `erased`, against `base`.

    `everything`: `unet`'s images of the whole catalog when the caller has them already.
    """
    from workers.conceptworld.world import CATALOG

    if everything is None:
        everything = evaluator.generate_for([c.name for c in CATALOG], unet)
    n_forget = evaluator.forget_per_concept or evaluator.per_concept
    forget = (evaluator.generate_for(erased, unet, per_concept=n_forget)
              if erased and n_forget != evaluator.per_concept else everything)
    heldout = (evaluator.generate_for(erased, unet, heldout=True, per_concept=n_forget)
               if erased else None)
    related, general = retention_sets(erased)
    related_acc, general_acc = mean_rate(everything, related), mean_rate(everything, general)
    return {
        "erased": list(erased),
        "forget_acc": {e: forget.rate(e) for e in erased},
        "forget_acc_heldout": {e: heldout.rate(e) for e in erased} if heldout else {},
        "related": related,
        "related_acc": related_acc,
        "related_retention": retention(everything, base, related),
        "general_acc": general_acc,
        "general_retention": retention(everything, base, general),
        "per_concept": {c.name: everything.rate(c.name) for c in CATALOG},
        # How well the kept concepts are drawn, and the base model's value on the same concepts.
        "quality": evaluator.retained_quality(everything, related + general),
        "base_quality": evaluator.retained_quality(base, related + general),
        "quality_all_concepts": evaluator.quality(everything.images),
        "forget_images": n_forget,
        "eval_seconds": everything.seconds + (heldout.seconds if heldout else 0.0)
        + (forget.seconds if forget is not everything else 0.0),
    }
