"""Which autocast dtype the engine runs under, and how to override it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from workers.engine import gpu
from workers.engine.gpu import autocast_dtype_for

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_explicit_precision_wins_on_every_device() -> None:
    assert autocast_dtype_for(CPU, "float32") is None
    assert autocast_dtype_for(CUDA, "float32") is None
    assert autocast_dtype_for(CPU, "bfloat16") is torch.bfloat16


def test_auto_is_bf16_on_cuda_and_on_cpus_with_native_bf16(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert autocast_dtype_for(CUDA) is torch.bfloat16
    monkeypatch.setattr(gpu, "_cpu_has_native_bf16", lambda: True)
    assert autocast_dtype_for(CPU) is torch.bfloat16
    monkeypatch.setattr(gpu, "_cpu_has_native_bf16", lambda: False)
    assert autocast_dtype_for(CPU) is None


def test_avx512_bf16_alone_counts_as_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert gpu._cpu_has_native_bf16()  # AMD Zen 4: bf16 dot products, no AMX
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not gpu._cpu_has_native_bf16()
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert not gpu._cpu_has_native_bf16()  # an older torch without the check: float32


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, float32 or bfloat16, not 'fp8'"):
        autocast_dtype_for(CPU, "fp8")


def test_the_service_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import Settings

    monkeypatch.setenv("LETHE_PRECISION", "float32")
    assert Settings().precision == "float32"
    monkeypatch.setenv("LETHE_PRECISION", "half")
    with pytest.raises(ValueError, match="precision"):
        Settings()


def test_the_service_setting_reaches_the_engine(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    from app.settings import get_settings
    from workers.engine import service_api

    asked: list[str] = []

    def fake_load(folder: Path, precision: str = "auto") -> SimpleNamespace:
        asked.append(precision)
        return SimpleNamespace(folder=Path(folder), unet=None)

    monkeypatch.setattr(service_api, "load_model", fake_load)
    for name in ("model", "base_unet", "version_key", "version", "evaluator"):
        monkeypatch.setattr(service_api._Loaded, name, None)
    monkeypatch.setattr(service_api._Loaded, "parent_sets", {})
    monkeypatch.setenv("LETHE_PRECISION", "float32")
    get_settings.cache_clear()
    try:
        service_api._model(tmp_path)
    finally:
        get_settings.cache_clear()
    assert asked == ["float32"]
