"""Every setting of a step is checked when its config is made, not when a step first uses it."""

from __future__ import annotations

import math

import pytest

from workers.engine.config import EraseConfig, method_config


@pytest.mark.parametrize("method", ["lacu", "naive", "esd", "dfr", "uce"])
def test_every_method_preset_is_a_valid_config(method: str) -> None:
    assert method_config(method).method == method


@pytest.mark.parametrize(("setting", "message"), [
    ({"trainable": "everything"}, "trainable must be 'full' or 'attn2' or 'attn2-kv' or 'tokens'"),
    ({"token_fallback": "tokens"}, "token_fallback must be 'full' or 'attn2' or 'attn2-kv'"),
    ({"replay": "nearest"}, "replay must be 'local' or 'global' or 'none', not 'nearest'"),
    ({"lr": 0.0}, "lr must be > 0, not 0.0"),
    ({"token_lr": -1e-2}, "token_lr must be > 0"),
    ({"steps": 0}, "steps must be ≥ 1, not 0"),
    ({"batch_forget": 0}, "batch_forget must be ≥ 1"),
    ({"replay_top_k": -1}, "replay_top_k must be ≥ 0"),
    ({"lambda_reg": math.nan}, "lambda_reg must be ≥ 0, not nan"),
    ({"rollout_guidance": -1.0}, "rollout_guidance must be ≥ 0"),
    ({"t_max_unlearn": 1000}, "t_max_unlearn must be ≤ 999"),
    ({"preserve_base_share": 1.5}, "preserve_base_share must be within"),
])
def test_a_setting_out_of_its_range_is_refused_by_name(setting: dict[str, object],
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EraseConfig(**setting)  # type: ignore[arg-type]


def test_optional_settings_may_be_left_unset_and_zero_is_a_weight() -> None:
    config = EraseConfig(rollout_guidance=None, consolidate_erased=None, replay_top_k=0,
                         lambda_reg=0.0, seed=-1)
    assert config.rollout_guidance is None and config.replay_top_k == 0
