"""Device-specific choices for the UNet: attention kernel, memory layout, batch sizes, compile.

Everything here is a no-op or the conservative choice on CPU, so the same engine code runs in
CPU tests and on a GPU worker.
"""

from __future__ import annotations

from typing import Any, get_args

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from app.settings import Precision

# A diffusers UNet; typed loosely because mypy resolves diffusers' lazy top-level
# names to their dummy placeholders, which the rest of the engine passes around.
UNet = Any

# Bytes of live activations per UNet sample per latent pixel per base channel, in bf16 inference:
# the widest transient (GEGLU feed-forward, 8·C0 wide) plus the skip connections held for the
# up path come to about 24·C0 values per latent pixel at the top level.
_ACTIVATION_VALUES_PER_PIXEL_PER_CHANNEL = 24
_BYTES_PER_VALUE = 2
_FREE_MEMORY_SHARE = 0.5  # leave room for the student, its gradients and optimizer state


def autocast_dtype_for(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype the engine runs under on `device`; None means plain float32.

    "auto" picks bf16 where the hardware computes in bf16 natively: every CUDA GPU we target,
    and CPUs with AVX512-BF16 dot products (AMD Zen 4 and later; Intel Cooper Lake, and
    Sapphire Rapids onwards: every AMX-BF16 part), where oneDNN runs the UNet's convolutions
    and matmuls 1.5-2.3x faster (EPYC Zen 4: forward + backward 0.41 -> 0.23 s; Xeon with AMX:
    0.45 -> 0.29 s). Elsewhere on CPU bf16 is emulated and slower: float32 stays.
    """
    if precision not in get_args(Precision):
        raise ValueError(f"precision must be auto, float32 or bfloat16, not {precision!r}")
    if precision == "float32":
        return None
    if precision == "bfloat16" or device.type == "cuda" or _cpu_has_native_bf16():
        return torch.bfloat16
    return None


def _cpu_has_native_bf16() -> bool:
    # torch exposes the check only privately; without it, assume emulated bf16 (float32 wins).
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(avx512_bf16 and avx512_bf16())


def prepare_unet(unet: UNet, device: torch.device) -> UNet:
    """Pick the attention kernel and memory layout for `device` (in place)."""
    if device.type == "cuda":
        # Fused scaled-dot-product attention (flash / memory-efficient kernels) and NHWC
        # convolutions, which Tensor Cores run without layout transposes.
        unet.set_attn_processor(AttnProcessor2_0())
        unet.to(memory_format=torch.channels_last)
    else:
        # Classic attention beats SDPA on CPU with few, narrow heads (feasibility.md).
        unet.set_attn_processor(AttnProcessor())
    return unet


def unet_batch_limit(unet: UNet, device: torch.device, preferred: int) -> int:
    """Largest UNet inference batch (≤ `preferred`) whose activations fit in free GPU memory.

    per sample ≈ 24 · C0 · H · W · 2 bytes (C0 = first block's channels, H × W latent pixels),
    budget = 0.5 · free memory. On CPU `preferred` is returned unchanged.
    """
    if device.type != "cuda":
        return preferred
    size, width = int(unet.config["sample_size"]), int(unet.config["block_out_channels"][0])
    per_sample = _ACTIVATION_VALUES_PER_PIXEL_PER_CHANNEL * width * size * size * _BYTES_PER_VALUE
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(preferred, int(free * _FREE_MEMORY_SHARE // per_sample)))


def compile_unet(unet: UNet) -> UNet:
    """Compile the UNet's forward in place (parameter names and state dict keys are unchanged).

    Pays where steps are launch-bound (small batches, K/V-only training); the first steps are
    slow while kernels compile.
    """
    unet.compile(dynamic=False)
    return unet
