"""Which UNet parameters an erasure may change."""

from __future__ import annotations

from torch import nn

from workers.engine.config import TrainableGroup


def is_kv_projection(module_name: str) -> bool:
    """A cross-attention key or value projection: the only weights that read the text alone."""
    return module_name.endswith(("attn2.to_k", "attn2.to_v"))


def trainable_names(unet: nn.Module, group: TrainableGroup) -> list[str]:
    """`full`: every parameter; `attn2`: cross-attention (q, k, v, out); `attn2-kv`: its k and v."""
    names = [n for n, _ in unet.named_parameters()]
    if group == "full":
        return names
    if group == "attn2":
        return [n for n in names if ".attn2." in n]
    if group == "attn2-kv":
        return [n for n in names if is_kv_projection(n.rsplit(".", 1)[0])]
    raise ValueError(f"unknown trainable group {group!r}")


def mark_trainable(unet: nn.Module, group: TrainableGroup) -> list[nn.Parameter]:
    chosen = set(trainable_names(unet, group))
    if not chosen:
        raise ValueError(f"the UNet has no parameters in group {group!r} (no cross-attention?)")
    params = []
    for name, p in unet.named_parameters():
        p.requires_grad_(name in chosen)
        if name in chosen:
            params.append(p)
    return params
