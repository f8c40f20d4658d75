"""Settings of one erasure step, with the reason for each default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Literal, get_args, get_origin, get_type_hints

UNetGroup = Literal["full", "attn2", "attn2-kv"]
TrainableGroup = Literal["full", "attn2", "attn2-kv", "tokens"]
Method = Literal["lacu", "naive", "esd", "dfr", "uce"]
PreserveSampling = Literal["prompt", "concept"]  # a preserve slot: any prompt, or a concept first
MemoryTargets = Literal["self", "mapping", "composites"]
ConsolidateAnchor = Literal["student", "teacher"]


@dataclass(frozen=True)
class EraseConfig:
    method: Method = "lacu"
    # --- locality-aware target selection
    select_targets: bool = True      # False = the fixed global anchor ablation
    fixed_anchor: str = ""           # the collapse-prone global anchor (naive, ablation)
    # LACU's K_map, noisy inputs per mapping distance: 16 picks the same targets as 32 on 29
    # of 30 prompts (star, diamond, yellow on the shipped model) in half the time.
    map_k: int = 16
    # Every method: each request prompt also appears with one other concept it names swapped
    # ("a red star" -> "a green star"), so the erasure holds in contexts the request did not
    # write (held-out templates pair the concept with other colours and styles).
    context_variants: int = 1
    # Every method: each request prompt also wrapped in one other wording the catalog uses
    # ("a drawing of {x}"), for phrasings the request did not write. With per-concept replay:
    # held-out forget accuracy 0 / 0.125 at steps 5–7 against 0.125–0.25
    # (bench/results/concept-replay-frames/).
    frame_variants: int = 1
    # Every method: each request prompt naming a composite also names it by the catalog's other
    # surface forms ("a solid orange circle" -> "a orange circle filled in"): an erasure must
    # hold under every name the concept is known by. Solid orange circle at its own step of
    # another sequence, 32 images: request / held-out 0.094 / 0 against 0.25 / 0.28
    # (bench/results/eleventh-session-probes/).
    alias_variants: bool = True
    # --- locality-aware replay
    replay: Literal["local", "global", "none"] = "local"
    replay_top_k: int = 8            # nearest retain concepts replayed (LACU: 10 of 50)
    retain_k: int = 16               # LACU's K_retain for ranking retain concepts
    # How a replay slot is filled: a replayed concept drawn first, then one of its prompts. Drawn
    # per prompt, a composite (2 prompts among ~45) got under one slot a batch and its erased
    # neighbour took it (related retention 0.847–0.875 at step 8, 0.958 per concept).
    replay_sampling: PreserveSampling = "concept"
    global_replay_prompts: int = 30  # DFR v1's random unrelated replay, scaled to our catalog
    erasure_memory: bool = True      # beyond the paper: earlier erasures stay distilled, no relapse
    # How a memory slot is filled, as `replay_sampling` for replay: drawn per prompt, a composite
    # (2 prompts among ~35 at step 9 of the default sequence) got half a slot a batch against a
    # colour's 1.4. Default sequence: star's held-out residue at steps 5–8 1 of 32 against 3,
    # quality at step 10 1.24 against 1.46 (base 1.21); solid red circle still 2 of 32 at step 9
    # (bench/results/lacu-twelfth-session/, one run each).
    memory_sampling: PreserveSampling = "concept"
    # What a memory prompt is distilled to: the teacher's own prediction there ("self"), or the
    # teacher's on a target selected again for it under the current version, so a residue the
    # teacher still draws is pushed out instead of kept: for every earlier erasure ("mapping")
    # or only for those named by their parts' words alone ("composites": "a solid red circle",
    # every word of which kept concepts share, so the teacher's prediction keeps its residue;
    # a concept with a word of its own holds its erasure in that word's keys/values). Default
    # sequence, step 10: solid red circle 1 of 32 against 5 ("self"), quality 1.40 against
    # 1.65 (base 1.21), the rest as "self"; "mapping" brought outlined back on held-out
    # templates (0.16–0.28 from step 5; bench/results/fourteenth-session-probes/).
    memory_targets: MemoryTargets = "composites"
    # Local replay also ranks retain concepts for each earlier erasure whose memory is mapped
    # again this step (`memory_targets`): its mapping is trained again, and its neighbours
    # ("solid yellow star" for "solid orange circle" -> "outlined orange circle") with it.
    # Default sequence, steps 9-10 from the same step 8, at 32 images a kept concept: quality
    # 0.79 against 0.85 (base 0.41), related 0.995 against 0.990; the other sequence the same
    # within an image (bench/results/sixteenth-session/).
    replay_remapped_neighbours: bool = True
    # With the memory: an earlier erasure's prompt that names the concept erased now ("a outlined
    # yellow star" when erasing star) is a forget prompt of this step, mapped away from both,
    # not a memory prompt distilled from the teacher (which still draws star there).
    forget_earlier_naming: bool = True
    # Replay targets: the teacher moved this share of the way to the base model. 0, because the
    # pull back to the base reaches the erased concepts through the shared K/V: at 1 retention
    # and quality meet the step-10 bar but earlier erasures relapse (worst forget 0.5, held-out
    # 0.75: bench/results/replay-from-base/); at 0.5 zorbo is back at step 5 (replay-half-base/).
    preserve_base_share: float = 0.0
    # --- objective
    # Scale reference. 3.0 (tuned at guidance 3) erased as well but cost related retention
    # (0.854 vs 0.958 after 4 steps of the default sequence, bench runs of 2026-11-28).
    lambda_unlearn: float = 1.0
    lambda_preserve: float = 2.0     # LACU: 5× the unlearning weight; here 2/3 of it (see λu)
    # Light ℓ2 pull to θ_prev (sum-reduced). The concept world's ε-losses are ~1e-4, so the pull
    # must sit well below that or it cancels the unlearning (1e-3 left half the images unerased).
    lambda_reg: float = 1e-5
    # Relative change of the keys and values every kept catalog prompt and every earlier erased
    # one reads (hold.py); 0 = off.
    lambda_hold: float = 0.0
    # The step ends with K/V re-solved so every kept catalog prompt and earlier erased one reads
    # the teacher's keys/values and the forget prompts the student's (hold.consolidate_kv): the
    # kept set's weight against the forget set's, 0 = off. At 0.1 related retention ≥ 0.984 and
    # general ≥ 0.993 through step 9 of the default sequence (without: 0.953, 0.974), quality at
    # step 10 1.90 vs 2.31 (base 1.21), forgetting no worse (bench/results/consolidate/); at 1 an
    # erasure is partly undone (outlined 0.125 from the base). Not at every step: off at the
    # yellow step from step 9 the kept set is drawn at 0.447 against 0.521, at the outlined
    # step from step 3 no different, at the purple step from step 5 worse (0.570 against 0.544;
    # bench/results/twenty-first-session/).
    consolidate: float = 0.1
    # What the kept catalog prompts read after the consolidation: the teacher's keys/values
    # moved this share of the way to the base model's. 0: each step holds the last one's, so
    # what every step leaks onto them adds up; 1: the base's, nothing adds up, but the pull
    # reaches the earlier erasures through the states they share (bench/results/kept-from-base/).
    consolidate_base_share: float = 0.0
    # The earlier erased prompts' weight in the consolidation, per token as `consolidate` is for
    # the kept ones (they read the teacher's K/V, which hold their erasure); None = `consolidate`.
    consolidate_erased: float | None = None
    # The replayed prompts (the retain concepts nearest the forget one, and any a request
    # protects) as a held set of their own with this weight: they share the most text
    # directions with the forget prompts, and inside the whole kept set (hundreds of prompts)
    # each weighs little. None = part of the kept set. Not better at one step
    # (bench/results/tenth-session-probes/).
    consolidate_neighbours: float | None = None
    # What the replayed prompts held apart (`consolidate_neighbours`) read: the teacher's K/V,
    # or the trained student's. Training distilled them from the teacher in output space
    # together with the erasure, so the student's K/V are ones that draw them as the teacher
    # did and leave the forget prompts mapped; holding them to the teacher's instead pulls
    # the nearest kept prompts (those sharing the most text directions with the forget ones)
    # against the erasure, and the solve spreads the difference over them.
    consolidate_neighbours_from: ConsolidateAnchor = "teacher"
    # The forget prompts' allowed rewrites (each candidate of target selection: "a solid yellow
    # star" for "a striped yellow star"; only where the concept is a part of others, see
    # below) as a held set of their own with this weight: the
    # prompts one word away from an erased one share the most text states with it, so the
    # solve pulls them along with the erasure ("solid" drifting to outlined when striped maps
    # there). None = only as part of the kept set where they are catalog prompts. Striped step
    # of the other sequence at 32 images: 1 and 3 keep solid yellow star (-3 and -1 of 32
    # against -5) and solid red circle (-6, -5 against -8) with forgetting unchanged, 10 brings
    # quax back (3 of 32). But from the base at 3 the composite solid orange circle keeps 11 of
    # 32 at its own step (6 without), 8 at step 3 with quax 3 and striped 5 held-out: a
    # composite's one-part rewrites are its nearest prompts of all (sixteenth-session/).
    # Without a composite's (but with a character's), at 3: the other sequence meets related
    # retention at step 6 (0.964 at 32 images, 0.928 without) but quality is 1.41x the base's
    # (1.09x without); on the default sequence blip's look ("striped blue square", held only
    # as a kept prompt) is lost with blip (related 0.750 at step 2). Parts only (now), at 3:
    # the other sequence meets every bar at step 6 (related 0.950, quality 1.0x at 32
    # images); the default sequence in float32 misses forgetting by one image (0.062) with
    # quality 1.99x (bench/results/seventeenth-session/), so it stays off.
    consolidate_rewrites: float | None = None
    # An erased character's look (the kept concept made of its parts: "a solid orange circle"
    # for mimi) as a held set of its own with this weight. Mapped to another character (mimi
    # -> tikka, a yellow star), the erasure leaks that character's colour into the look.
    # Default sequence's three character steps, float32, at 32 images a kept concept: quality
    # 0.50 against the base's 0.49 (1.03x; 0.65, 1.33x, off), related 1.000 (0.992), every
    # erased concept at 0 of 32 either way (bench/results/eighteenth-session/). Not yet run
    # over the full sequences. None = only as part of the kept set.
    consolidate_looks: float | None = 3.0
    # The kept concepts the forget prompts are mapped to (tikka, for mimi -> tikka) as a held
    # set of their own with this weight: the mapping pulls the forget prompts' output onto the
    # target's, and the solve can pull the target's K/V along (tikka was the concept drawn
    # worst after the three character steps with looks held). None = part of the kept set:
    # at 3 the full sequence on an H200 ended at related 0.888, general 0.896 and quality
    # 2.77x the base's, against 0.974, 1.000 and 1.36x without it
    # (bench/results/twentieth-session/).
    consolidate_targets: float | None = None
    # The unconditional prompt as a held set of its own with this weight: classifier-free
    # guidance reads it in every image, and as one prompt among hundreds its keys/values move
    # more than the median kept concept's (bench/results/tenth-session-probes/). None = part of
    # the kept set.
    consolidate_unconditional: float | None = None
    # The solve's ridge (× the mean eigenvalue of the held states) and what it pulls toward:
    # the trained student, or the teacher (text directions no prompt set reads keep its K/V).
    consolidate_ridge: float = 1e-4
    consolidate_anchor: ConsolidateAnchor = "student"
    # The positions a forget prompt shares with a kept one from its start ("<bos> a red" in "a
    # red star" and "a red circle": the causal encoder gives them one state) read the held
    # sets' K/V, not the student's: every prompt reads them, none carries the concept. Quality
    # at step 10 of the default sequence 1.38 vs 1.50 (base 1.21), 1.10× the base's at step 9
    # vs 1.30× (bench/results/shared-prefixes/).
    consolidate_shared_prefixes: bool = True
    # The earlier erased prompts the consolidation holds include their context and frame
    # variants, as their own step erased them (more of the text around an erased concept held):
    # with shared prefixes, related retention at step 10 0.990 vs 0.979, solid red circle's
    # held-out relapse at step 9 gone (bench/results/consolidate-variants/).
    consolidate_erased_variants: bool = True
    # The erased concepts' own token rows (tokens.py): a kept prompt's text states are those of
    # the base model bit for bit, so nothing kept is drawn differently. Over the ten steps of the
    # default sequence the UNet path (K/V, consolidated) lost quality step by step, 1.27x the
    # base's at step 10 at best, because every K/V edit is read by kept prompts too (about four
    # of 64 text directions belong mostly to erased prompts: bench/results/twenty-fourth-
    # session/). `attn2-kv`: cross-attention K/V, the UNet weights that see the text alone.
    trainable: TrainableGroup = "tokens"
    # With `tokens`: the UNet group a step is erased in where token rows cannot be used (a
    # model with two text encoders, or no catalog to tell a concept's own words apart).
    token_fallback: UNetGroup = "attn2-kv"
    token_lr: float = 1e-2           # Adam on token rows (unit-scale embeddings, not K/V weights)
    # A word whose forget prompts' targets mostly swap it for one token ("a yellow circle" ->
    # "a orange circle") takes that token's row, untrained: the exact map for those prompts,
    # state for state (tokens.substituted_rows); phrases and words without one are trained.
    # Yellow's step from step 9 of the default sequence, float32, 32 images of each kept
    # concept naming yellow: their quality 1.08 (teacher 1.01) against 1.23 trained from its
    # own row and 1.42 trained from orange's; ellipse 32 of 32 against 30; yellow 0 of 32
    # either way (bench/results/twenty-seventh-session/). A phrase spelled with a copy ("solid
    # red circle" once red reads as orange, "solid orange circle" erased) reads as the phrase
    # (tokens.spelled_alike), so any token may be copied: red trained instead took the other
    # sequence's quality to 2.29x the base's at step 6, copied 1.38x (bench/results/
    # continual-aliased/).
    token_substitute: bool = True
    # A substituted row trained on from the copy, pushed (`unlearn_push`) and pulled to the copy
    # by `lambda_reg`, instead of kept as the copy. The copy keeps the substitute's own
    # mistakes (the base draws a few "a outlined blue square" filled: solid 2 of 32 with solid
    # copying outlined, 1 pushed), but every kept prompt naming the word then reads a trained
    # row: the default sequence's typicality ratio 1.25 against 1.00, Fréchet 2.21 against 1.41
    # (bench/results/thirty-fourth-session/). Off.
    push_substitutes: bool = False
    # The forget prompts that say a phrase trained now (one row) are mapped alike: the same
    # words in its place in each, those nearest on average. Each mapped to its own nearest, an
    # earlier phrase trained again ("outlined red triangle" when triangle is erased) was asked
    # for semicircles in one wording and diamonds in another, and drew triangles again in 6 of
    # 32 images (drawn16, step 3; bench/results/forty-first-session/).
    phrase_one_reading: bool = True
    # Optimizer steps. 80 left outlined in 2–3 of 32 images at its own step (request and
    # held-out) and 120 none on request templates (1 of 32 held-out); with 120 every erased
    # concept reads 0 of 32 at step 10 of the default sequence (bench/results/steps-120/).
    steps: int = 120
    lr: float = 1e-3                 # AdamW on K/V only; these small weights barely move at 5e-5
    batch_forget: int = 16           # forget prompts per optimizer step
    # A merged step (k takedowns at once) draws `batch_forget` per concept, so each gets a
    # single step's forget signal; one shared batch gives each a k-th of it. Zorbo, blip, star
    # in one step: zorbo 0.125 against 0.5 shared (3 single steps: 0), 0.64× the time of the
    # single steps against 0.42× (bench/results/merged-twelfth-session/).
    forget_batch_per_concept: bool = True
    batch_preserve: int = 24         # replay + memory prompts per optimizer step
    # LACU unlearns on t ∈ U[0, 600] (SD latents); in 24×24 pixel space with a cosine schedule
    # colour and shape are decided above t = 600, so the whole range is needed to forget them.
    t_max_unlearn: int = 999
    # --- teacher rollouts (the x_0 the losses noise)
    rollout_steps: int = 10          # DDIM steps; x_0 only has to be on the prompt's distribution
    rollout_guidance: float | None = None  # the model's own sampling guidance: x_t as users see it
    rollouts_per_prompt: int = 2     # distinct x_0 per prompt in the cache (4: slower, no better)
    # Beyond LACU: half the unlearn batch is noised from the *target's* rollouts. Sampling the
    # erased prompt walks toward the target's images, so the map must hold there too (with
    # forget rollouts alone, 1 image in 4 still showed the concept).
    unlearn_on_target_rollouts: bool = True
    # Beyond LACU: the unlearn target pushed this far from the forget prompt's own prediction,
    # ε_T(p*) − s·(ε_T(p_f) − ε_T(p*)) (ESD's negative guidance anchored at the target). The
    # nearest target in score space can be one the model itself sometimes draws as the concept
    # ("a outlined orange circle", drawn filled 2 of 32 times, for "a solid orange circle"):
    # solid orange circle's step from the base (a phrase, trained), 32 images, request /
    # held-out 0 / 0 against 2 / 2 unpushed, 63 s against 55 (bench/results/twenty-seventh-
    # session/). Measured on token rows only; the K/V path reads the same setting.
    unlearn_push: float = 1.0
    cache_rollouts: bool = True      # False: regenerate rollouts every step (as LACU's release)
    # --- GPU efficiency (no effect on results beyond float rounding)
    gradient_checkpointing: bool = False  # trade compute for memory when training the full UNet
    compile_student: bool = False    # torch.compile the student: pays where steps are launch-bound
    # --- baselines
    esd_eta: float = 1.0             # ESD-x negative-guidance strength
    uce_preserve_scale: float = 1.0  # UCE λ on preserved embeddings
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("consolidate_base_share", "preserve_base_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], not {getattr(self, name)}")
        hints = get_type_hints(EraseConfig)
        for name in (f.name for f in fields(self)):
            value, allowed = getattr(self, name), _literal_values(hints[name])
            if allowed and value is not None and value not in allowed:
                choices = " or ".join(repr(a) for a in allowed)
                raise ValueError(f"{name} must be {choices}, not {value!r}")
            if name == "seed" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            low, strict = (1, False) if name in AT_LEAST_ONE else (0, name in POSITIVE)
            if not (value > low if strict else value >= low):  # NaN fails too
                raise ValueError(f"{name} must be {'>' if strict else '≥'} {low}, not {value}")
        if self.t_max_unlearn > 999:
            raise ValueError(f"t_max_unlearn must be ≤ 999, not {self.t_max_unlearn}")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def with_(self, **changes: object) -> EraseConfig:
        return replace(self, **changes)  # type: ignore[arg-type]


# Counts that must be at least one, rates that must be above zero; every other number of the
# config (weights, shares, other counts) must be at least zero.
AT_LEAST_ONE = ("map_k", "retain_k", "steps", "batch_forget", "batch_preserve",
                "rollout_steps", "rollouts_per_prompt")
POSITIVE = ("lr", "token_lr", "consolidate_ridge")


def _literal_values(annotation: object) -> tuple[object, ...]:
    """The values a Literal annotation allows (of `X | None` too); () for any other type."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return tuple(v for a in get_args(annotation) for v in _literal_values(a))


def method_config(method: str, **overrides: object) -> EraseConfig:
    """The configuration each method runs with on the shared interface. The baselines get the
    same forget prompts (request, context and frame variants) and step budget as LACU, none of
    its preserving ingredients (the K/V consolidation included)."""
    presets: dict[str, dict[str, object]] = {
        "lacu": {},
        # Fixed global anchor, no replay, no ℓ2 pull, no memory: the collapse case.
        "naive": {"trainable": "attn2-kv", "select_targets": False, "replay": "none",
                  "lambda_reg": 0.0, "erasure_memory": False, "lambda_preserve": 0.0,
                  "unlearn_on_target_rollouts": False, "consolidate": 0.0, "unlearn_push": 0.0},
        # ESD-x: negative guidance on cross-attention, nothing preserved.
        "esd": {"trainable": "attn2-kv", "replay": "none", "lambda_reg": 0.0,
                "erasure_memory": False, "lambda_preserve": 0.0, "select_targets": False,
                "unlearn_on_target_rollouts": False, "consolidate": 0.0, "unlearn_push": 0.0},
        # DFR (v1): a fixed context-preserving rewrite, global random replay, ℓ2, no memory;
        # replay distilled from the previous version whatever LACU's default share.
        "dfr": {"trainable": "attn2-kv", "select_targets": False, "replay": "global",
                "erasure_memory": False, "unlearn_on_target_rollouts": False,
                "preserve_base_share": 0.0, "replay_sampling": "prompt", "consolidate": 0.0,
                "unlearn_push": 0.0},
        # UCE: closed form on cross-attention K/V; preserves the replay set's embeddings.
        "uce": {"trainable": "attn2-kv", "select_targets": False, "replay": "global",
                "erasure_memory": False, "unlearn_push": 0.0},
    }
    if method not in presets:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(presets)}")
    return EraseConfig(method=method, **{**presets[method], **overrides})  # type: ignore[arg-type]
