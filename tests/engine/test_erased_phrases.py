"""Earlier erased phrases on the shipped concept world, where targets mean what they draw."""

from __future__ import annotations

from workers.conceptworld.cli import JUDGE_PATH, MODEL_DIR
from workers.conceptworld.judge import Judge
from workers.conceptworld.world import CONCEPT_BY_NAME
from workers.engine.concepts import load_catalog
from workers.engine.config import method_config
from workers.engine.erase import ForgetRequest, erase
from workers.engine.loading import LoadedModel, load_model
from workers.engine.sampling import generate


def _stars(model: LoadedModel, prompt: str) -> int:
    images = generate(model, [prompt] * 8, list(range(8)))
    return int(Judge.load(JUDGE_PATH).read(images).shows(CONCEPT_BY_NAME["star"]).sum())


def test_an_erased_phrase_drawing_a_concept_erased_later_is_mapped_away_from_it() -> None:
    model = load_model(MODEL_DIR, device="cpu")
    catalog = load_catalog(MODEL_DIR)
    cfg = method_config("lacu")
    phrase, star = catalog["striped blue square"], catalog["star"]
    _, first = erase(model, model.unet, [ForgetRequest(phrase, phrase.prompts)], [], catalog,
                     cfg)
    # the phrase's nearest target was a striped blue star, and it draws stars now
    assert first.plan.targets()["a striped blue square"] == "a striped blue star"
    assert _stars(first.model, "a striped blue square") >= 6
    _, second = erase(first.model, model.unet, [ForgetRequest(star, star.prompts)], [phrase],
                      catalog, cfg)
    target = second.plan.targets()["a striped blue square"]
    assert not catalog.mentions(target, {"star", "striped blue square"})
    assert '"striped blue square"' in second.token_rows
    assert _stars(second.model, "a striped blue square") == 0
