"""The score-prediction distance: how differently the model itself treats two prompts.

This is the only place it is computed (target selection and replay ranking both call it).
"""

from __future__ import annotations

import hashlib
import weakref

import torch
from diffusers import UNet2DConditionModel

from workers.engine.conditioning import Conditioning, encode_prompts
from workers.engine.gpu import unet_batch_limit
from workers.engine.loading import LoadedModel
from workers.engine.sampling import autocast_for, predict_noise

# Noise predictions kept per UNet for later calls, at most this many bytes a UNet.
PREDICTION_MEMO_BYTES = 512 * 2**20

# Per UNet: (weights' in-place version, draw) -> conditioning digest -> its K predictions. A
# later step's planning scores mostly prompts it scored before ("a red triangle" is a candidate
# for star, then for diamond); where the version changed token rows only, a prompt without
# them is conditioned as before, and the same UNet on the same inputs predicts the same noise.
# The key is the conditioning itself, so a prompt whose rows changed is predicted afresh.
_memo: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[object, ...],
                                                       dict[bytes, torch.Tensor]]]
_memo = weakref.WeakKeyDictionary()


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
    gen = torch.Generator().manual_seed(seed)
    shape = (k, *model.latent_shape)
    z, noise = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (k,), generator=gen)
    x_t = model.scheduler.add_noise(z, noise, t).to(model.device)
    t = t.to(model.device)

    unique = list(dict.fromkeys(prompts_a + prompts_b))
    cond = encode_prompts(model, unique)
    digests = [_digest(cond.index(slice(i, i + 1))) for i in range(len(unique))]
    memo = _memo_for(unet, (k, seed, shape, str(model.autocast_dtype)))
    eps = {p: memo[d] for p, d in zip(unique, digests, strict=True) if d in memo}
    missing = [i for i, p in enumerate(unique) if p not in eps]
    per_chunk = max(1, unet_batch_limit(unet, model.device, chunk) // k)
    with autocast_for(model):
        for start in range(0, len(missing), per_chunk):
            batch = missing[start:start + per_chunk]
            out = predict_noise(unet, x_t.repeat(len(batch), 1, 1, 1), t.repeat(len(batch)),
                                cond.index(torch.tensor(batch)).repeat(k))
            for j, i in enumerate(batch):
                eps[unique[i]] = out[j * k:(j + 1) * k].clone()
    _remember(unet, memo, {digests[i]: eps[unique[i]] for i in missing})
    return torch.stack([(eps[a] - eps[b]).pow(2).mean() for a, b in zip(prompts_a, prompts_b,
                                                                         strict=True)]).cpu()


def _digest(cond: Conditioning) -> bytes:
    parts = [cond.hidden, *(cond.added or {}).values()]
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.detach().float().cpu().numpy().tobytes())
    return h.digest()


def _memo_for(unet: torch.nn.Module, draw: tuple[object, ...]) -> dict[bytes, torch.Tensor]:
    """The predictions remembered for `unet` as its weights are now, on the inputs of `draw`.
    An in-place edit of any weight bumps its version counter, which drops what came before."""
    weights = tuple(p._version for p in unet.parameters())
    per_unet = _memo.setdefault(unet, {})
    key = (hash(weights), *draw)
    for stale in [k for k in per_unet if k[0] != key[0]]:
        del per_unet[stale]
    return per_unet.setdefault(key, {})


def _remember(unet: torch.nn.Module, memo: dict[bytes, torch.Tensor],
              fresh: dict[bytes, torch.Tensor]) -> None:
    """Add `fresh` to `memo`, then forget the oldest predictions of `unet` past the bound."""
    memo.update(fresh)
    memos = list(_memo[unet].values())
    size = sum(v.numel() * v.element_size() for m in memos for v in m.values())
    for m in memos:
        for oldest in list(m):
            if size <= PREDICTION_MEMO_BYTES:
                return
            size -= m[oldest].numel() * m[oldest].element_size()
            del m[oldest]
