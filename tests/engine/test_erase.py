from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from workers.engine.concepts import load_catalog
from workers.engine.config import method_config
from workers.engine.erase import ForgetRequest, erase
from workers.engine.kv_solve import kv_projections
from workers.engine.loading import LoadedModel
from workers.engine.losses import l2_pull
from workers.engine.methods.uce import closed_form_edit
from workers.engine.progress import ProgressEvent
from workers.engine.sampling import generate
from workers.engine.trainable import mark_trainable, trainable_names
from workers.engine.versions import ArtifactError, load_version, save_version

# The UNet path (K/V); the token path's own tests are in test_tokens.py
FAST = {"steps": 3, "batch_forget": 4, "batch_preserve": 4, "rollout_steps": 2, "map_k": 2,
        "retain_k": 2, "rollouts_per_prompt": 1, "trainable": "attn2-kv"}


def _request(folder: Path, name: str) -> tuple[ForgetRequest, object]:
    catalog = load_catalog(folder)
    concept = catalog[name]
    return ForgetRequest(concept, concept.prompts[:3]), catalog


def test_teacher_gets_no_gradients_and_is_unchanged(tiny_model: LoadedModel,
                                                    tiny_folder: Path) -> None:
    request, catalog = _request(tiny_folder, "zorbo")
    before = {k: v.clone() for k, v in tiny_model.unet.state_dict().items()}
    student, _ = erase(tiny_model, tiny_model.unet, [request], [], catalog,  # type: ignore[arg-type]
                       method_config("lacu", **FAST))
    assert all(p.grad is None and not p.requires_grad for p in tiny_model.unet.parameters())
    assert all(torch.equal(v, tiny_model.unet.state_dict()[k]) for k, v in before.items())
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(".attn2." in k for k in changed)


def test_l2_pull_is_zero_at_initialisation(tiny_model: LoadedModel) -> None:
    student = copy.deepcopy(tiny_model.unet)
    params = mark_trainable(student, "attn2")
    assert float(l2_pull(params, [p.detach().clone() for p in params])) == 0.0


def test_trainable_groups_nest(tiny_model: LoadedModel) -> None:
    full = set(trainable_names(tiny_model.unet, "full"))
    attn2 = set(trainable_names(tiny_model.unet, "attn2"))
    kv = set(trainable_names(tiny_model.unet, "attn2-kv"))
    assert kv < attn2 < full and kv
    # the K/V group trains exactly the projections the closed-form solves rewrite
    assert {n.rsplit(".", 1)[0] for n in kv} == set(kv_projections(tiny_model.unet))


def test_uce_with_empty_erase_set_returns_weights_unchanged(tiny_model: LoadedModel) -> None:
    width = tiny_model.unet.config.cross_attention_dim
    empty = torch.zeros(0, width, dtype=torch.float64)
    preserve = torch.randn(12, width, dtype=torch.float64)
    edited = closed_form_edit(tiny_model.unet, empty, empty, preserve, 1.0)
    for (name, a), b in zip(tiny_model.unet.state_dict().items(),
                            edited.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_seeded_step_is_reproducible(tiny_model: LoadedModel, tiny_folder: Path) -> None:
    request, catalog = _request(tiny_folder, "blip")
    cfg = method_config("lacu", **FAST)
    a, _ = erase(tiny_model, tiny_model.unet, [request], [], catalog, cfg)  # type: ignore[arg-type]
    b, _ = erase(tiny_model, tiny_model.unet, [request], [], catalog, cfg)  # type: ignore[arg-type]
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_a_pushed_unlearn_target_trains_other_weights(tiny_model: LoadedModel,
                                                     tiny_folder: Path) -> None:
    request, catalog = _request(tiny_folder, "blip")
    a, b = (erase(tiny_model, tiny_model.unet, [request], [], catalog,  # type: ignore[arg-type]
                  method_config("lacu", **FAST, unlearn_push=push))[0] for push in (0.0, 1.0))
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_progress_reports_every_stage_in_order(tiny_model: LoadedModel,
                                               tiny_folder: Path) -> None:
    request, catalog = _request(tiny_folder, "tikka")
    events: list[ProgressEvent] = []
    erase(tiny_model, tiny_model.unet, [request], [], catalog,  # type: ignore[arg-type]
          method_config("lacu", **FAST), progress=events.append)
    stages = [e.stage for e in events]
    assert stages[:2] == ["selecting_targets", "building_replay"]
    assert stages[-1] == "training" and events[-1].step == events[-1].total == 3
    assert "unlearn" in events[-1].losses


def test_version_round_trip_gives_identical_outputs(tiny_model: LoadedModel, tiny_folder: Path,
                                                    tmp_path: Path) -> None:
    request, catalog = _request(tiny_folder, "pyra")
    student, _ = erase(tiny_model, tiny_model.unet, [request], [], catalog,  # type: ignore[arg-type]
                       method_config("lacu", **FAST))
    manifest = save_version(tmp_path / "v1", tiny_model.unet, student, {"erased": ["pyra"]})
    tensors = manifest["tensors"]
    assert isinstance(tensors, list | dict) and tensors
    assert all(".attn2." in t for t in tensors)
    reloaded = load_version(tiny_model.unet, tmp_path / "v1")
    kwargs = {"steps": 3, "guidance": 2.0}
    a = generate(tiny_model, ["pyra", "a red circle"], [1, 2], unet=student, **kwargs)  # type: ignore[arg-type]
    b = generate(tiny_model, ["pyra", "a red circle"], [1, 2], unet=reloaded, **kwargs)  # type: ignore[arg-type]
    assert torch.equal(a, b)


def test_weights_a_diverged_step_left_non_finite_are_never_saved(tiny_model: LoadedModel,
                                                                  tmp_path: Path) -> None:
    diverged = copy.deepcopy(tiny_model.unet)
    name, weight = next((n, p) for n, p in diverged.named_parameters() if ".attn2.to_k" in n)
    with torch.no_grad():
        weight.view(-1)[0] = float("nan")
    with pytest.raises(ArtifactError, match=f"NaN or infinity \\({name}\\)"):
        save_version(tmp_path / "v1", tiny_model.unet, diverged, {"erased": ["pyra"]})
    assert not list(tmp_path.iterdir())  # neither the version nor a partial folder


def test_every_baseline_runs_on_the_same_interface(tiny_model: LoadedModel,
                                                   tiny_folder: Path) -> None:
    request, catalog = _request(tiny_folder, "mimi")
    for method in ("naive", "esd", "dfr", "uce"):
        student, report = erase(tiny_model, tiny_model.unet, [request], [], catalog,  # type: ignore[arg-type]
                                method_config(method, **FAST))
        diff = sum(float((a - b).abs().sum()) for a, b in
                   zip(student.parameters(), tiny_model.unet.parameters(), strict=True))
        assert diff > 0, method


def test_baselines_run_without_lacus_own_ingredients() -> None:
    # naive must stay the collapse case: no consolidation, memory, replay or ℓ2 of LACU's
    for method in ("naive", "esd", "dfr"):
        cfg = method_config(method)
        assert cfg.consolidate == 0.0 and cfg.lambda_hold == 0.0, method
        assert not cfg.erasure_memory and not cfg.unlearn_on_target_rollouts, method
    assert all(method_config(m).unlearn_push == 0.0 for m in ("naive", "esd", "dfr", "uce"))
    assert method_config("lacu").consolidate > 0 and method_config("lacu").unlearn_push > 0


@pytest.mark.parametrize(("trainable", "loop"), [
    ("attn2-kv", "workers.engine.erase"), ("tokens", "workers.engine.methods.token_rows")])
def test_a_merged_step_maps_every_concept_and_feeds_each_a_full_forget_batch(
        tiny_model: LoadedModel, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch,
        trainable: str, loop: str) -> None:
    import importlib

    loop_module = importlib.import_module(loop)
    catalog = load_catalog(tiny_folder)
    requests = [ForgetRequest(catalog[n], catalog[n].prompts[:2]) for n in ("zorbo", "star")]
    batches: list[int] = []
    original = loop_module.unlearn_loss

    def counting(student_eps: torch.Tensor, target_eps: torch.Tensor) -> torch.Tensor:
        batches.append(len(student_eps))
        return original(student_eps, target_eps)  # type: ignore[no-any-return]

    monkeypatch.setattr(loop_module, "unlearn_loss", counting)
    _, report = erase(tiny_model, tiny_model.unet, requests, [], catalog,
                      method_config("lacu", **FAST | {"trainable": trainable},
                                    token_substitute=False))  # trained, not substituted
    groups = report.plan.mapping_groups
    assert [{catalog.mentions(m.forget_prompt, {n}) for m in g}
            for g, n in zip(groups, ("zorbo", "star"), strict=True)] == [{True}, {True}]
    if trainable == "tokens":
        assert sorted(report.token_rows) == ["star</w>", "zorbo</w>"]
    assert batches == [2 * FAST["batch_forget"]] * FAST["steps"]  # type: ignore[operator]
