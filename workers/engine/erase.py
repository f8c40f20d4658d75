"""One erasure step: plan (targets, replay, memory), then distil a student from the teacher.

Teacher = frozen current version M_{i-1}; student initialised from it. The loop reads top to
bottom: sample forget and preserve prompts, noise cached teacher rollouts, compute the named
losses, step.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from diffusers import UNet2DConditionModel

from workers.engine.concepts import Catalog, CatalogConcept, find_phrase
from workers.engine.conditioning import Conditioning, encode_prompts
from workers.engine.config import EraseConfig, PreserveSampling
from workers.engine.gpu import compile_unet
from workers.engine.hold import Held, KVHold, consolidate_kv
from workers.engine.loading import LoadedModel
from workers.engine.losses import esd_target, l2_pull, preserve_loss, unlearn_loss
from workers.engine.progress import Cancelled, ProgressEvent
from workers.engine.replay import (
    UNCONDITIONAL,
    ReplaySet,
    global_replay_set,
    local_replay_set,
    retained_prompts,
)
from workers.engine.rollouts import RolloutCache
from workers.engine.sampling import autocast_for, predict_noise
from workers.engine.targets import (
    MappingChoice,
    alias_variants,
    candidate_rewrites,
    context_variants,
    drawn_as,
    fixed_rewrite,
    frame_variants,
    select_mapping_groups,
    select_memory_targets,
)
from workers.engine.tokens import (
    Owned,
    erased_by,
    owned_tokens,
    read_as,
    row_names,
    spelled_alike,
    word_ids,
)
from workers.engine.trainable import mark_trainable

ProgressFn = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class ForgetRequest:
    concept: CatalogConcept
    prompts: tuple[str, ...]          # the request's prompts (or the catalog's)
    protect: tuple[CatalogConcept, ...] = ()


@dataclass
class StepPlan:
    # One group per requested concept (a merged step has several) and per earlier erased one:
    # a batch can draw a concept first, then one of its prompts (cf. ReplaySet.groups).
    mapping_groups: list[list[MappingChoice]]
    replay: ReplaySet
    memory_groups: list[list[str]]
    # K/V held (lambda_hold, consolidate): kept catalog prompts, and earlier erased ones
    hold_prompts: list[str] = field(default_factory=list)
    held_erasures: list[str] = field(default_factory=list)
    # memory_targets="mapping": what each memory prompt is distilled to (else itself)
    memory_targets: dict[str, str] = field(default_factory=dict)
    # consolidate_rewrites: every allowed rewrite of a forget prompt, held to the teacher's K/V
    rewrite_prompts: list[str] = field(default_factory=list)
    # consolidate_looks: the prompts of a forget character's look, held to the teacher's K/V
    look_prompts: list[str] = field(default_factory=list)
    # consolidate_targets: the prompts of the kept concepts the forget prompts are mapped to
    target_prompts: list[str] = field(default_factory=list)

    @property
    def mappings(self) -> list[MappingChoice]:
        return [m for group in self.mapping_groups for m in group]

    @property
    def memory_prompts(self) -> list[str]:
        return [p for group in self.memory_groups for p in group]

    def targets(self) -> dict[str, str]:
        return {m.forget_prompt: m.target for m in self.mappings}


@dataclass
class StepReport:
    plan: StepPlan
    # The model the new UNet is used with: the input one, or (trainable `tokens`) a view whose
    # text encoder holds the erased concepts' trained rows.
    model: LoadedModel
    seconds: dict[str, float] = field(default_factory=dict)
    final_losses: dict[str, float] = field(default_factory=dict)
    rollouts_generated: int = 0
    # The token rows trained (trainable `tokens`), by token; empty when the UNet was.
    token_rows: list[str] = field(default_factory=list)
    # Per requested concept erased already by earlier erasures' words (every name of "solid
    # red circle" says solid), those erasures: nothing is trained or planned for it.
    covered_by: dict[str, list[str]] = field(default_factory=dict)


def plan_step(model: LoadedModel, unet: UNet2DConditionModel, requests: list[ForgetRequest],
              erased_before: list[CatalogConcept], catalog: Catalog, cfg: EraseConfig,
              read_as_now: dict[str, list[CatalogConcept]] | None = None,
              one_reading: Sequence[str] = ()) -> StepPlan:
    """`read_as_now`: per requested concept, the earlier erasures whose rows copy one of its
    words (tokens.read_as): their prompts are its forget prompts too. `one_reading`: the
    phrases read through one trained row, whose prompts are mapped alike
    (targets.select_mapping_groups)."""
    banned = {r.concept.name for r in requests} | {c.name for c in erased_before}
    now = {r.concept.name for r in requests}
    forget_groups: list[tuple[CatalogConcept, list[str]]] = []
    for r in requests:
        naming = _earlier_naming(r.concept, erased_before, catalog, cfg)
        naming += [p for c in (read_as_now or {}).get(r.concept.name, []) for p in c.prompts]
        forget_groups.append((r.concept, _with_variants(
            list(dict.fromkeys([*r.prompts, *naming])), r.concept, catalog, banned, cfg)))
    if cfg.select_targets:
        mapping_groups = select_mapping_groups(model, forget_groups, catalog, banned,
                                               k=cfg.map_k, seed=cfg.seed + 42, unet=unet,
                                               one_reading=one_reading)
    elif cfg.method == "dfr" or cfg.method == "uce":
        mapping_groups = [[MappingChoice(p, fixed_rewrite(p, c, catalog, banned), 0.0, 1)
                           for p in prompts] for c, prompts in forget_groups]
    else:
        mapping_groups = [[MappingChoice(p, cfg.fixed_anchor, 0.0, 1) for p in prompts]
                          for _, prompts in forget_groups]
    memory = [(c, group) for c in (erased_before if cfg.erasure_memory else [])
              if (group := [p for p in c.prompts
                            if not (cfg.forget_earlier_naming and catalog.mentions(p, now))])]
    memory_groups = [group for _, group in memory]
    # earlier erased prompts (every one, or a composite's: `memory_targets`) mapped again, under
    # the current version and away from everything erased since: a residue the teacher still
    # draws is not kept but pushed out
    remapped = [(c, group) for c, group in memory if cfg.memory_targets == "mapping"
                or (cfg.memory_targets == "composites" and catalog.named_by_parts(c))]
    memory_targets = select_memory_targets(model, remapped, catalog, banned, k=cfg.map_k,
                                           seed=cfg.seed + 45, unet=unet)
    forget = [r.concept for r in requests]
    protect = [c for r in requests for c in r.protect]
    # a remapped earlier erasure is mapped away again: its nearest kept concepts need replay
    # as much as the concept erased now
    ranked = forget + ([c for c, _ in remapped if memory_targets.keys() & set(c.prompts)]
                       if cfg.replay_remapped_neighbours else [])
    if cfg.replay == "local":
        replay = local_replay_set(model, ranked, catalog, banned, top_k=cfg.replay_top_k,
                                  k=cfg.retain_k, seed=cfg.seed + 43, protect=protect, unet=unet)
    elif cfg.replay == "global":
        replay = global_replay_set(forget, catalog, banned, n_prompts=cfg.global_replay_prompts,
                                   seed=cfg.seed + 43)
    else:
        replay = ReplaySet.nothing(forget)
    hold: list[str] = []
    held_erasures: list[str] = []
    rewrites: list[str] = []
    if cfg.consolidate > 0 and cfg.consolidate_rewrites is not None:
        forget_prompts = {m.forget_prompt for group in mapping_groups for m in group}
        # only a part's (a shape, colour or style other concepts are made of): a composite's
        # one-part rewrites are its nearest prompts of all and holding them fights its erasure;
        # a character's are the other characters, and held hard they push its erasure into its
        # own look, a kept concept
        parts = {n for c in catalog.concepts.values() for n in c.contains}
        rewrites = [c for c in dict.fromkeys(
            c for r, group in zip(requests, mapping_groups, strict=True)
            if r.concept.name in parts for m in group
            for c in candidate_rewrites(m.forget_prompt, r.concept, catalog, banned))
            if c not in forget_prompts]
    looks: list[str] = []
    if cfg.consolidate > 0 and cfg.consolidate_looks is not None:
        looks = [p for c in character_looks(forget, catalog, banned) for p in c.prompts
                 if not catalog.mentions(p, banned)]
    targets: list[str] = []
    if cfg.consolidate > 0 and cfg.consolidate_targets is not None:
        mappings = [m for group in mapping_groups for m in group]
        targets = [p for c in target_concepts(mappings, catalog, banned) for p in c.prompts
                   if not catalog.mentions(p, banned)]
    if cfg.lambda_hold > 0 or cfg.consolidate > 0:
        # every kept catalog prompt, and every earlier erased one that does not name a concept
        # erased now ("a purple star drawn as an outline" holds outlined, but also purple)
        hold = retained_prompts(catalog, banned, protect)
        held_erasures = [p for c in erased_before for p in (
            _with_variants(list(c.prompts), c, catalog, banned, cfg)
            if cfg.consolidate_erased_variants else c.prompts) if not catalog.mentions(p, now)]
    return StepPlan(mapping_groups, replay, memory_groups, hold, held_erasures, memory_targets,
                    rewrites, looks, targets)


def character_looks(forget: list[CatalogConcept], catalog: Catalog, banned: set[str]
                    ) -> list[CatalogConcept]:
    """The kept concepts each forget character is drawn as: made of the same parts and not a
    character themselves (mimi's look is "solid orange circle"; erasing that composite holds
    no character, which contains it and goes with it)."""
    return [c for f in forget if f.kind == "character" and f.contains
            for c in catalog.concepts.values()
            if c.kind != "character" and c.name not in banned
            and set(c.contains) == set(f.contains)]


def target_concepts(mappings: list[MappingChoice], catalog: Catalog, banned: set[str]
                    ) -> list[CatalogConcept]:
    """The kept concepts the forget prompts are mapped to: named in a target but not in its
    forget prompt (tikka for "mimi" -> "tikka"; solid and the composite solid yellow star for
    "a striped yellow star" -> "a solid yellow star", not yellow or star)."""
    return [c for c in catalog.concepts.values()
            if c.name not in banned and not banned.intersection(c.contains)
            and any(c.named_in(m.target) and not c.named_in(m.forget_prompt) for m in mappings)]


def _earlier_naming(concept: CatalogConcept, erased_before: list[CatalogConcept],
                    catalog: Catalog, cfg: EraseConfig) -> list[str]:
    """The earlier erasures' prompts that name `concept` ("a outlined yellow star" when erasing
    star): forget prompts of its step, mapped away from both. A composite's are taken under
    each of its names ("a red circle filled in" for "a solid red circle" when erasing solid),
    as its own step took them: each name may be a phrase with a row of its own."""
    if not (cfg.erasure_memory and cfg.forget_earlier_naming):
        return []
    out: list[str] = []
    for earlier in erased_before:
        if earlier.name == concept.name:  # an earlier erasure requested again (its own prompts)
            continue
        naming = [p for p in earlier.prompts if catalog.mentions(p, {concept.name})]
        if cfg.alias_variants:
            naming += [p for p in alias_variants(naming, earlier)
                       if catalog.mentions(p, {concept.name})]
        out += naming
    return list(dict.fromkeys(out))


def _with_variants(prompts: list[str], concept: CatalogConcept, catalog: Catalog,
                   banned: set[str], cfg: EraseConfig) -> list[str]:
    """A concept's prompts, plus their alias, context and frame variants: what a step erases."""
    if cfg.alias_variants:
        prompts = prompts + alias_variants(prompts, concept)
    return (prompts + context_variants(prompts, concept, catalog, banned,
                                       per_prompt=cfg.context_variants, seed=cfg.seed + 41)
            + frame_variants(prompts, catalog, per_prompt=cfg.frame_variants, seed=cfg.seed + 44))


def erase(model: LoadedModel, unet: UNet2DConditionModel, requests: list[ForgetRequest],
          erased_before: list[CatalogConcept], catalog: Catalog, cfg: EraseConfig, *,
          progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None
          ) -> tuple[UNet2DConditionModel, StepReport]:
    """Return a new UNet with the requested concepts erased; `unet` (the teacher) is untouched.

    With trainable `tokens` the concepts that own token rows are erased there and the UNet is
    returned as it was: `StepReport.model` is then the model view to use it with."""
    emit = progress or (lambda event: None)
    stop = should_stop or (lambda: False)
    torch.manual_seed(cfg.seed)
    clock = time.perf_counter()
    emit(ProgressEvent("selecting_targets", 0, cfg.steps))
    kept = kept_prompts(requests, erased_before, catalog)
    earlier = _owned_earlier(model, erased_before, catalog) if cfg.trainable == "tokens" else {}
    covered = {r.concept.name: by for r in requests if (by := erased_by(model, r.concept, earlier))}
    if covered:  # erased already, by what they contain: from here on as earlier erasures
        erased_before = erased_before + [r.concept for r in requests if r.concept.name in covered]
        requests = [r for r in requests if r.concept.name not in covered]
        if not requests:
            return unet, _nothing_to_train(model, [], kept, covered, clock)
    taken = _all_words(earlier)
    rows = token_rows_to_train(model, requests, kept, cfg, taken)
    if cfg.trainable == "tokens" and rows is None:
        cfg = cfg.with_(trainable=cfg.token_fallback)
    read_now: dict[str, list[CatalogConcept]] = {}
    if rows is not None:
        # replay and memory are exact by construction (methods/token_rows.py): not planned
        cfg = cfg.with_(replay="none", memory_targets="self", consolidate=0.0, lambda_hold=0.0)
        # an earlier erasure substituted by a word erased now ("star" read as "diamond") is
        # mapped again in this step, or it would draw what the word no longer does
        copied: set[int] = set()
        for r in requests:
            # only the rows trained now change what a copy of them reads
            mine = [i for i in word_ids(model, r.concept) if i in rows.ids]
            copies = {c.name: read_as(model, c, mine) for c in erased_before}
            read_now[r.concept.name] = [c for c in erased_before if copies[c.name]]
            copied.update(w for ws in copies.values() for w in ws)
        # an earlier erased phrase naming a concept erased now ("striped blue square" when
        # erasing striped) is read through its own row, never the concept's words: trained again
        now = {r.concept.name for r in requests}
        phrases = {p.id for p in model.phrases if catalog.mentions(p.text, now)}
        redo, redo_rows = _phrases_drawing(model, unet, now, erased_before, catalog, cfg)
        rows = Owned(sorted({*rows.ids, *copied, *phrases, *redo_rows}), rows.phrases)
        requests = requests + redo
        if not rows:  # a plan would map prompts that no trained row reads
            return unet, _nothing_to_train(model, requests, kept, covered, clock)
    one_reading: list[str] = []
    if rows is not None and cfg.phrase_one_reading:
        one_reading = [text for text, _ in rows.phrases] + [
            p.text for p in model.phrases if p.id in rows.ids]
    plan = plan_step(model, unet, requests, erased_before, catalog, cfg, read_now, one_reading)
    seconds = {"planning": time.perf_counter() - clock}
    emit(ProgressEvent("building_replay", 0, cfg.steps))

    if rows is not None:  # empty where earlier erasures' rows erase it already
        from workers.engine.methods.token_rows import erase_rows

        view, trained, last, more, generated = erase_rows(model, unet, plan, rows, cfg, emit,
                                                          stop)
        view, spellings = spelled_alike(view, kept)
        return unet, StepReport(plan, view, seconds | more, last, generated,
                                row_names(view, trained + spellings), covered)

    if cfg.method == "uce":
        from workers.engine.methods.uce import uce_edit

        clock = time.perf_counter()
        student = uce_edit(model, unet, plan, cfg)
        seconds["training"] = time.perf_counter() - clock
        return student, StepReport(plan, model, seconds)

    teacher = unet.eval().requires_grad_(False)
    student = copy.deepcopy(unet).train()
    if cfg.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    if cfg.compile_student:
        compile_unet(student)
    params = mark_trainable(student, cfg.trainable)
    reference = [p.detach().clone() for p in params]
    hold = (KVHold.build(model, student, plan.hold_prompts + plan.held_erasures)
            if cfg.lambda_hold > 0 else None)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    cache = RolloutCache(model, teacher, steps=cfg.rollout_steps, guidance=cfg.rollout_guidance,
                         per_prompt=cfg.rollouts_per_prompt, seed=cfg.seed,
                         enabled=cfg.cache_rollouts)
    clock = time.perf_counter()
    targets = [m.target for m in plan.mappings] if cfg.unlearn_on_target_rollouts else []
    cache.prepare([m.forget_prompt for m in plan.mappings] + targets + plan.replay.prompts
                  + plan.memory_prompts)
    seconds["rollouts"] = time.perf_counter() - clock

    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    num_t = model.scheduler.config.num_train_timesteps
    losses: dict[str, float] = {}
    n_memory = _memory_slots(plan, cfg)
    clock = time.perf_counter()
    for step in range(cfg.steps):
        if stop():
            raise Cancelled(f"stopped at training step {step} of {cfg.steps}")
        forget = forget_batch(plan, cfg, rng)
        keep = _preserve_batch(plan, n_memory, cfg, rng)
        forget_prompts = [m.forget_prompt for m in forget]
        # where each forget sample's x_0 comes from: its own rollouts, or its target's
        sources = [m.target if cfg.unlearn_on_target_rollouts and j % 2 else m.forget_prompt
                   for j, m in enumerate(forget)]

        x0 = cache.sample(sources + keep, gen).to(model.device)
        t = torch.cat([torch.randint(0, cfg.t_max_unlearn + 1, (len(forget),), generator=gen),
                       torch.randint(0, num_t, (len(keep),), generator=gen)]).to(model.device)
        noise = torch.randn(x0.shape, generator=gen).to(model.device)
        x_t = model.scheduler.add_noise(x0, noise, t)

        with torch.no_grad(), autocast_for(model):
            target_eps = _reference_eps(model, teacher, x_t, t, forget, keep, n_memory, cfg,
                                        plan.memory_targets)
        with autocast_for(model):
            student_eps = predict_noise(student, x_t, t, encode_prompts(model,
                                                                        forget_prompts + keep))
        n = len(forget)
        terms = {"unlearn": unlearn_loss(student_eps[:n], target_eps[:n])}
        if keep and cfg.lambda_preserve > 0:
            terms["preserve"] = preserve_loss(student_eps[n:], target_eps[n:])
        if cfg.lambda_reg > 0:
            terms["l2"] = l2_pull(params, reference)
        if hold is not None:
            terms["hold"] = hold.loss()
        weights = {"unlearn": cfg.lambda_unlearn, "preserve": cfg.lambda_preserve,
                   "l2": cfg.lambda_reg, "hold": cfg.lambda_hold}
        loss = sum(weights[k] * v for k, v in terms.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

        losses = {k: v.item() for k, v in terms.items()} | {"total": loss.item()}  # type: ignore[union-attr]
        elapsed = time.perf_counter() - clock
        eta = elapsed / (step + 1) * (cfg.steps - step - 1)
        if step % 5 == 0 or step + 1 == cfg.steps:
            emit(ProgressEvent("training", step + 1, cfg.steps, losses, eta))
    seconds["training"] = time.perf_counter() - clock
    if cfg.consolidate > 0:
        clock = time.perf_counter()
        consolidate_kv(model, student, held_sets(model, teacher, plan, cfg, trained=student),
                       [m.forget_prompt for m in plan.mappings], ridge=cfg.consolidate_ridge,
                       anchor=teacher if cfg.consolidate_anchor == "teacher" else None,
                       hold_shared_prefixes=cfg.consolidate_shared_prefixes)
        seconds["consolidating"] = time.perf_counter() - clock
    student.eval().requires_grad_(False)
    return student, StepReport(plan, model, seconds, losses, cache.generated)


def _phrases_drawing(model: LoadedModel, unet: UNet2DConditionModel, now: set[str],
                     erased_before: list[CatalogConcept], catalog: Catalog, cfg: EraseConfig
                     ) -> tuple[list[ForgetRequest], set[int]]:
    """Earlier erasures whose phrase rows draw a concept erased now without naming it ("a
    striped blue square" trained toward "a striped blue star", star erased now): each again as
    a request of this step on those prompts, and the phrase rows they read. A phrase row is
    read only by prompts naming its erased phrase, so training it again moves no kept prompt."""
    phrases = [p for p in model.phrases if not catalog.mentions(p.text, now)]
    earlier: list[tuple[str, CatalogConcept, set[str]]] = []
    for i, concept in enumerate(erased_before):
        banned_then = {c.name for c in erased_before[:i + 1]}
        prompts = list(concept.prompts)
        if cfg.alias_variants:
            prompts += alias_variants(prompts, concept)
        earlier += [(p, concept, banned_then) for p in prompts
                    if not catalog.mentions(p, now)
                    and any(find_phrase(p, phrase.text) for phrase in phrases)]
    if not earlier:
        return [], set()
    drawn = drawn_as(model, earlier, catalog, k=cfg.map_k, seed=cfg.seed + 46, unet=unet)
    redo: dict[str, list[str]] = {}
    ids: set[int] = set()
    for prompt, concept, _ in earlier:
        if prompt in drawn and catalog.mentions(drawn[prompt], now):
            redo.setdefault(concept.name, []).append(prompt)
            ids |= {p.id for p in phrases if find_phrase(prompt, p.text)}
    by_name = {c.name: c for c in erased_before}
    return [ForgetRequest(by_name[n], tuple(prompts)) for n, prompts in redo.items()], ids


def _owned_earlier(model: LoadedModel, erased_before: list[CatalogConcept], catalog: Catalog
                   ) -> dict[str, frozenset[int]]:
    """The word rows each earlier erasure owned, at its own step ("solid" once solid is
    erased; not "red" for "solid red circle", kept prompts said red then; nothing for
    "outlined red triangle" after red, whose every name says red)."""
    owned: dict[str, frozenset[int]] = {}
    for i, concept in enumerate(erased_before):
        kept = retained_prompts(catalog, {c.name for c in erased_before[:i + 1]}, [])
        mine = owned_tokens(model, concept, kept, _all_words(owned))
        owned[concept.name] = frozenset(mine.ids if mine else ())
    return owned


def _all_words(owned: dict[str, frozenset[int]]) -> frozenset[int]:
    return frozenset(t for ids in owned.values() for t in ids)


def _nothing_to_train(model: LoadedModel, requests: list[ForgetRequest], kept: list[str],
                      covered: dict[str, list[str]], clock: float) -> StepReport:
    """A `tokens` step with no row to train: nothing planned, the model as it reads now."""
    view, spellings = spelled_alike(model, kept)
    plan = StepPlan([[] for _ in requests], ReplaySet.nothing([r.concept for r in requests]), [])
    return StepReport(plan, view, {"planning": time.perf_counter() - clock},
                      token_rows=row_names(view, spellings), covered_by=covered)


def token_rows_to_train(model: LoadedModel, requests: list[ForgetRequest], kept: list[str],
                        cfg: EraseConfig, taken: frozenset[int] = frozenset()) -> Owned | None:
    """What a `tokens` step trains: every requested concept's own words and phrases
    (tokens.py; none an earlier erasure owns, `taken`, and nothing for a concept whose every
    name contains such a word: it is erased already), or None when one of them owns nothing,
    the model has two text encoders, or the catalog lists no kept prompt to tell a concept's
    own words from everyone's."""
    if cfg.trainable != "tokens" or model.is_sdxl or cfg.method != "lacu":
        return None
    if len(kept) < 2:  # the unconditional prompt alone
        return None
    owned = [owned_tokens(model, r.concept, kept, taken) for r in requests]
    if any(o is None for o in owned):
        return None
    ids = sorted({t for o in owned if o for t in o.ids})
    phrases = list(dict.fromkeys(p for o in owned if o for p in o.phrases))
    return Owned(ids, phrases)


def kept_prompts(requests: list[ForgetRequest], erased_before: list[CatalogConcept],
                 catalog: Catalog) -> list[str]:
    """The catalog prompts a step keeps: none naming a concept erased now or before."""
    banned = {r.concept.name for r in requests} | {c.name for c in erased_before}
    return retained_prompts(catalog, banned, [c for r in requests for c in r.protect])


def held_sets(model: LoadedModel, teacher: UNet2DConditionModel, plan: StepPlan,
              cfg: EraseConfig, *, trained: UNet2DConditionModel | None = None) -> list[Held]:
    """What the consolidation holds: earlier erasures read the teacher's K/V; kept prompts the
    teacher's moved `consolidate_base_share` of the way to the base model's (a set read from
    both sources in proportion reads the blend: the solve is linear in them), the replayed
    ones (read from the teacher or, `consolidate_neighbours_from`, the `trained` student) and
    the unconditional prompt apart with weights of their own where set. Every token
    of the kept and earlier erased prompts weighs alike unless `consolidate_erased` says
    otherwise: each set's weight is its share of those prompts."""
    share = cfg.consolidate_base_share
    erased_weight = cfg.consolidate if cfg.consolidate_erased is None else cfg.consolidate_erased
    kept = set(plan.hold_prompts)
    apart: list[Held] = []
    trained_apart: list[Held] = []  # read from the student: no blend with the base model
    if cfg.consolidate_neighbours is not None:
        replayed = [p for p in plan.replay.prompts if p != UNCONDITIONAL and p in kept]
        if cfg.consolidate_neighbours_from == "teacher":
            apart.append(Held(teacher, replayed, cfg.consolidate_neighbours))
        elif trained is None:
            raise ValueError("consolidate_neighbours_from='student' needs the trained student")
        elif replayed:
            trained_apart.append(Held(trained, replayed, cfg.consolidate_neighbours))
    for prompts, weight in ((plan.rewrite_prompts, cfg.consolidate_rewrites),
                            (plan.look_prompts, cfg.consolidate_looks),
                            (plan.target_prompts, cfg.consolidate_targets)):
        if weight is not None:
            taken = {p for h in apart + trained_apart for p in h.prompts}
            apart.append(Held(teacher, [p for p in prompts if p not in taken], weight))
    if cfg.consolidate_unconditional is not None and UNCONDITIONAL in kept:
        apart.append(Held(teacher, [UNCONDITIONAL], cfg.consolidate_unconditional))
    apart = [h for h in apart if h.prompts]
    held_apart = {p for h in apart + trained_apart for p in h.prompts}
    rest = [p for p in plan.hold_prompts if p not in held_apart]
    if share == 0 and erased_weight == cfg.consolidate:
        return [Held(teacher, rest + plan.held_erasures, cfg.consolidate), *apart,
                *trained_apart]
    pool = max(len(rest) + len(plan.held_erasures), 1)
    kept_sets = [Held(teacher, rest, cfg.consolidate * len(rest) / pool), *apart]
    blended = [Held(source, h.prompts, h.weight * part) for h in kept_sets
               for source, part in ((teacher, 1 - share), (model.unet, share)) if part > 0]
    erased = Held(teacher, plan.held_erasures, erased_weight * len(plan.held_erasures) / pool)
    return [h for h in [*blended, erased, *trained_apart] if h.prompts and h.weight > 0]


def forget_batch(plan: StepPlan, cfg: EraseConfig, rng: random.Random
                  ) -> list[MappingChoice]:
    """`batch_forget` mappings, drawn per requested concept where `forget_batch_per_concept`
    (a merged step's batch grows with its concepts) or from them all."""
    groups = plan.mapping_groups if cfg.forget_batch_per_concept else [plan.mappings]
    return [rng.choice(group) for group in groups for _ in range(cfg.batch_forget)]


def _memory_slots(plan: StepPlan, cfg: EraseConfig) -> int:
    """Preserve-batch slots for the erasure memory: a third, or all of it without replay."""
    if cfg.lambda_preserve <= 0 or not plan.memory_prompts:
        return 0
    return cfg.batch_preserve if not plan.replay.prompts else cfg.batch_preserve // 3


def _preserve_batch(plan: StepPlan, n_memory: int, cfg: EraseConfig, rng: random.Random
                    ) -> list[str]:
    """`n_memory` memory prompts first: `_reference_eps` treats `keep[n_memory:]` as replay."""
    replay, memory = plan.replay.prompts, plan.memory_prompts
    if cfg.lambda_preserve <= 0 or not (replay or memory):
        return []
    return (_draw(memory, plan.memory_groups, n_memory, cfg.memory_sampling, rng)
            + _draw(replay, plan.replay.groups, cfg.batch_preserve - n_memory,
                    cfg.replay_sampling, rng))


def _draw(prompts: list[str], groups: list[list[str]], n: int, sampling: PreserveSampling,
          rng: random.Random) -> list[str]:
    """`n` prompts: per concept (a group, then one of its prompts) or per prompt."""
    if sampling == "concept" and groups:
        return [rng.choice(rng.choice(groups)) for _ in range(n)]
    return [rng.choice(prompts) for _ in range(n)]


def _reference_eps(model: LoadedModel, teacher: UNet2DConditionModel, x_t: torch.Tensor,
                   t: torch.Tensor, forget: list[MappingChoice], keep: list[str],
                   n_memory: int, cfg: EraseConfig, memory_targets: dict[str, str]
                   ) -> torch.Tensor:
    """What the student must predict: ε_T on the forget targets (ESD: its negatively guided
    prediction) and on the memory prompts (or their `memory_targets`); on the replay prompts
    ε_T + s·(ε_base − ε_T), s = `preserve_base_share`."""
    n = len(forget)
    if cfg.method == "esd":
        prompts = [m.forget_prompt for m in forget] + [""] * n + keep
        teacher_eps = predict_noise(teacher, torch.cat([x_t[:n], x_t]), torch.cat([t[:n], t]),
                                    encode_prompts(model, prompts))
        eps = torch.cat([esd_target(teacher_eps[n:2 * n], teacher_eps[:n], cfg.esd_eta),
                         teacher_eps[2 * n:]])
    else:
        memory = [memory_targets.get(p, p) for p in keep[:n_memory]]
        eps = pushed_targets(model, teacher, x_t, t, forget, memory + keep[n_memory:], cfg)
    start = n + n_memory
    share = cfg.preserve_base_share
    if share > 0 and start < len(eps) and model.unet is not teacher:
        base = predict_noise(model.unet, x_t[start:], t[start:],
                             encode_prompts(model, keep[n_memory:]))
        eps = torch.cat([eps[:start], eps[start:] + share * (base - eps[start:])])
    return eps


def pushed_targets(model: LoadedModel, teacher: torch.nn.Module, x_t: torch.Tensor,
                   t: torch.Tensor, forget: list[MappingChoice], rest: list[str],
                   cfg: EraseConfig, own_view: LoadedModel | None = None) -> torch.Tensor:
    """ε_T on each forget prompt's target pushed `unlearn_push` away from the forget prompt's
    own prediction (ESD's negative guidance anchored at p*; unpushed at 0), then ε_T on the
    `rest` prompts: x_t's first rows go with `forget`, the others with `rest`. One teacher call
    for all of it: one batch runs faster than two on a CPU. `own_view` reads the forget
    prompts for their own prediction where `model` would not read what they name."""
    n = len(forget)
    if len(x_t) != n + len(rest):
        raise ValueError(f"{len(x_t)} noisy inputs for {n} forget and {len(rest)} other prompts")
    own = [m.forget_prompt for m in forget] if cfg.unlearn_push > 0 else []
    cond = encode_prompts(model, [m.target for m in forget] + rest)
    if own:
        cond = Conditioning.cat([cond, encode_prompts(own_view or model, own)])
    eps = predict_noise(teacher, torch.cat([x_t, x_t[:len(own)]]), torch.cat([t, t[:len(own)]]),
                        cond)
    if not own:
        return eps
    return torch.cat([esd_target(eps[:n], eps[len(x_t):], cfg.unlearn_push), eps[n:len(x_t)]])
