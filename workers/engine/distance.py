"""The score-prediction distance: how differently the model itself treats two prompts.

This is the only place it is computed (target selection and replay ranking both call it).
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict

import torch
from diffusers import UNet2DConditionModel

from workers.engine.conditioning import Conditioning, encode_prompts
from workers.engine.gpu import unet_batch_limit
from workers.engine.loading import LoadedModel
from workers.engine.sampling import autocast_for, predict_noise

# Noise predictions kept per UNet for later calls (on the CPU), at most this many bytes a UNet.
PREDICTION_MEMO_BYTES = 512 * 2**20


class _Memo:
    """One UNet's remembered predictions, by (draw, conditioning digest), least recently used
    first. A later step's planning scores mostly prompts it scored before ("a red triangle" is
    a candidate for star, then for diamond); where the version changed token rows only, a
    prompt without them is conditioned as before, and the same UNet on the same inputs
    predicts the same noise. The key is the conditioning itself, so a prompt whose rows changed
    is predicted afresh; `weights` tells whether the UNet's weights are still those predicted
    with."""

    def __init__(self) -> None:
        self.weights: tuple[tuple[int, int], ...] = ()
        self.entries: OrderedDict[tuple[object, ...], torch.Tensor] = OrderedDict()
        self.size = 0


_memos: weakref.WeakKeyDictionary[torch.nn.Module, _Memo] = weakref.WeakKeyDictionary()


@torch.no_grad()
def score_distance(model: LoadedModel, prompts_a: list[str], prompts_b: list[str], k: int = 16,
                   seed: int = 42, *, unet: UNet2DConditionModel | None = None,
                   chunk: int = 256) -> torch.Tensor:
    """d(a_i, b_i) = (1/K) Σ_k mean((ε(x_k, t_k, a_i) − ε(x_k, t_k, b_i))²), one value per pair.

    x_k = √ᾱ_t z_k + √(1−ᾱ_t) ε_k with z_k, ε_k ~ N(0, I) and t_k ~ U{0..T−1}; the same K noisy
    inputs serve every prompt, so each distinct prompt is evaluated once and every pair compares
    predictions on identical inputs. Symmetric, and 0 for identical prompts.
    """
    if len(prompts_a) != len(prompts_b):
        raise ValueError("score_distance compares prompts pairwise: the lists differ in length")
    unet = unet or model.unet
    unique = list(dict.fromkeys(prompts_a + prompts_b))
    with autocast_for(model):
        cond = encode_prompts(model, unique)
    draw = (k, seed, tuple(model.latent_shape), str(model.autocast_dtype))
    keys = [(*draw, d) for d in _digests(cond)]
    memo = _memo_for(unet)
    eps: dict[str, torch.Tensor] = {}
    for prompt, key in zip(unique, keys, strict=True):
        if key in memo.entries:
            memo.entries.move_to_end(key)
            eps[prompt] = memo.entries[key]
    missing = [i for i, p in enumerate(unique) if p not in eps]
    fresh = _predict(model, unet, cond, missing, k, seed, chunk)
    for i, prediction in zip(missing, fresh, strict=True):
        eps[unique[i]] = prediction
        _remember(memo, keys[i], prediction)
    return torch.stack([(eps[a] - eps[b]).pow(2).mean() for a, b in zip(prompts_a, prompts_b,
                                                                         strict=True)])


def _predict(model: LoadedModel, unet: UNet2DConditionModel, cond: Conditioning,
             which: list[int], k: int, seed: int, chunk: int) -> list[torch.Tensor]:
    """The K predictions of each of `cond`'s rows `which`, on the draw's noisy inputs, on the
    CPU."""
    gen = torch.Generator().manual_seed(seed)
    shape = (k, *model.latent_shape)
    z, noise = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (k,), generator=gen)
    x_t = model.scheduler.add_noise(z, noise, t).to(model.device)
    t = t.to(model.device)
    per_chunk = max(1, unet_batch_limit(unet, model.device, chunk) // k)
    out: list[torch.Tensor] = []
    with autocast_for(model):
        for start in range(0, len(which), per_chunk):
            batch = which[start:start + per_chunk]
            pred = predict_noise(unet, x_t.repeat(len(batch), 1, 1, 1), t.repeat(len(batch)),
                                 cond.index(torch.tensor(batch)).repeat(k)).cpu()
            out += [pred[j * k:(j + 1) * k].clone() for j in range(len(batch))]
    return out


def _digests(cond: Conditioning) -> list[bytes]:
    parts = [p.detach().float().cpu().numpy() for p in [cond.hidden, *(cond.added or {}).values()]]
    out = []
    for i in range(len(cond)):
        h = hashlib.blake2b(digest_size=16)
        for part in parts:
            h.update(part[i].tobytes())
        out.append(h.digest())
    return out


def _memo_for(unet: torch.nn.Module) -> _Memo:
    """`unet`'s memo, emptied if any weight was edited in place (its version counter moved) or
    replaced (its storage moved) since it was filled."""
    weights = tuple((p.data_ptr(), p._version) for p in unet.parameters())
    memo = _memos.setdefault(unet, _Memo())
    if memo.weights != weights:
        memo.weights, memo.entries, memo.size = weights, OrderedDict(), 0
    return memo


def _remember(memo: _Memo, key: tuple[object, ...], prediction: torch.Tensor) -> None:
    memo.entries[key] = prediction
    memo.size += prediction.numel() * prediction.element_size()
    while memo.size > PREDICTION_MEMO_BYTES and memo.entries:
        _, oldest = memo.entries.popitem(last=False)
        memo.size -= oldest.numel() * oldest.element_size()
