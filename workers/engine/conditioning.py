"""Turning prompts into the UNet's conditioning, the way each pipeline family does it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workers.engine.loading import LoadedModel
from workers.engine.phrases import merge_phrases


@dataclass
class Conditioning:
    """Everything the UNet needs for a batch of prompts besides x_t and t."""

    hidden: torch.Tensor
    added: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.hidden.shape[0])

    def index(self, idx: torch.Tensor | slice) -> Conditioning:
        added = {k: v[idx] for k, v in self.added.items()} if self.added else None
        return Conditioning(self.hidden[idx], added)

    def repeat(self, n: int) -> Conditioning:
        added = ({k: v.repeat_interleave(n, 0) for k, v in self.added.items()}
                 if self.added else None)
        return Conditioning(self.hidden.repeat_interleave(n, 0), added)

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        added = None
        if parts[0].added:
            added = {k: torch.cat([p.added[k] for p in parts]) for k in parts[0].added}  # type: ignore[index]
        return Conditioning(torch.cat([p.hidden for p in parts]), added)


def token_ids(model: LoadedModel, prompts: list[str], second: bool = False) -> list[list[int]]:
    """Each prompt's token ids as the (first or `second`) text encoder reads them: padded to the
    tokenizer's length, each of the model's phrases (tokens.py) merged into its own token."""
    tokenizer = model.tokenizer_2 if second else model.tokenizer
    assert tokenizer is not None
    length = tokenizer.model_max_length
    if not model.phrases or second:
        return tokenizer(prompts, padding="max_length", max_length=length,  # type: ignore[no-any-return]
                         truncation=True).input_ids
    rows = [merge_phrases(row, model.phrases)[:length] for row in tokenizer(prompts).input_ids]
    return [row + [tokenizer.pad_token_id] * (length - len(row)) for row in rows]


def _token_tensor(model: LoadedModel, prompts: list[str], second: bool = False) -> torch.Tensor:
    return torch.tensor(token_ids(model, prompts, second), device=model.device)


@torch.no_grad()
def encode_prompts(model: LoadedModel, prompts: list[str]) -> Conditioning:
    """Encode prompts with the frozen text encoder(s); results are cached per prompt."""
    missing = [p for p in dict.fromkeys(prompts) if p not in model._prompt_cache]
    if missing:
        fresh = encode_fresh(model, missing)
        for i, prompt in enumerate(missing):
            model._prompt_cache[prompt] = fresh.index(slice(i, i + 1))
    return Conditioning.cat([model._prompt_cache[p] for p in prompts])


def encode_fresh(model: LoadedModel, prompts: list[str]) -> Conditioning:
    """Encode prompts without the cache, with gradients where the encoder has trainable parts."""
    ids = _token_tensor(model, prompts)
    if not model.is_sdxl:
        return Conditioning(model.text_encoder(ids).last_hidden_state)
    # SDXL: penultimate hidden states of both encoders, concatenated; the second encoder's
    # projected pooled output and the size/crop time ids go in as added conditions.
    first = model.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    ids2 = _token_tensor(model, prompts, second=True)
    out2 = model.text_encoder_2(ids2, output_hidden_states=True)  # type: ignore[misc]
    hidden = torch.cat([first, out2.hidden_states[-2]], dim=-1)
    pooled = out2.text_embeds
    if model.zero_empty_prompt:
        empty = torch.tensor([p == "" for p in prompts], device=model.device)
        hidden = torch.where(empty[:, None, None], torch.zeros_like(hidden), hidden)
        pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
    vae_levels = len(model.vae.config.block_out_channels) if model.vae else 1  # type: ignore[attr-defined]
    size = model.unet.config.sample_size * 2 ** (vae_levels - 1)  # type: ignore[attr-defined]
    # (original size, crop top-left, target size), as SDXL pipelines pass them
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=hidden.dtype,
                            device=model.device).repeat(len(prompts), 1)
    return Conditioning(hidden, {"text_embeds": pooled, "time_ids": time_ids})
