"""Earlier erased phrases on the shipped concept world, where targets mean what they draw."""

from __future__ import annotations

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.judge import Judge
from workers.conceptworld.world import CONCEPT_BY_NAME
from workers.engine.concepts import Catalog, load_catalog
from workers.engine.config import method_config
from workers.engine.erase import ForgetRequest, StepReport, erase
from workers.engine.loading import LoadedModel, load_model
from workers.engine.sampling import generate


def _stars(model: LoadedModel, prompt: str) -> int:
    images = generate(model, [prompt] * 8, list(range(8)))
    return int(Judge.load(JUDGE_PATH).read(images).shows(CONCEPT_BY_NAME["star"]).sum())


def _phrase_then(phrase_name: str, later_name: str) -> tuple[Catalog, StepReport, StepReport]:
    """The composite `phrase_name` erased from the base, then `later_name` from that version:
    the catalog and each step's report."""
    model = load_model(MODEL_DIR, device="cpu")
    catalog = load_catalog(MODEL_DIR)
    cfg = method_config("lacu")
    phrase, later = catalog[phrase_name], catalog[later_name]
    _, first = erase(model, model.unet, [ForgetRequest(phrase, phrase.prompts)], [], catalog,
                     cfg)
    _, second = erase(first.model, model.unet, [ForgetRequest(later, later.prompts)], [phrase],
                      catalog, cfg)
    return catalog, first, second


def test_an_erased_phrase_drawing_a_concept_erased_later_is_mapped_away_from_it() -> None:
    catalog, first, second = _phrase_then("striped blue square", "star")
    # the phrase's nearest target was a striped blue star, and it draws stars now
    assert first.plan.targets()["a striped blue square"] == "a striped blue star"
    assert _stars(first.model, "a striped blue square") >= 6
    target = second.plan.targets()["a striped blue square"]
    assert not catalog.mentions(target, {"star", "striped blue square"})
    assert '"striped blue square"' in second.token_rows
    assert _stars(second.model, "a striped blue square") == 0


def test_an_erased_phrase_trained_again_stays_away_from_what_its_words_name() -> None:
    """"solid red circle" is first drawn as outlined red circles; erasing outlined trains the
    phrase again. Pushed away only from what the teacher drew for it (outlined), it fell back
    to solid red circles in 6 of 32 images; pushed away from what its words name, none."""
    catalog, first, second = _phrase_then("solid red circle", "outlined")
    phrase = catalog["solid red circle"]
    assert first.plan.targets()["a solid red circle"] == "a outlined red circle"
    assert '"solid red circle"' in second.token_rows  # trained again
    wordings = [*phrase.prompts, *phrase.heldout_prompts]
    images = generate(second.model, [w for w in wordings for _ in range(16)], list(range(64)))
    shown = Judge.load(JUDGE_PATH).read(images).shows(CONCEPT_BY_NAME[phrase.name])
    assert int(shown.sum()) == 0, f"{int(shown.sum())} of 64 still show it"
