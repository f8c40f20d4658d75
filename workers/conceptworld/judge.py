"""The judge: a small CNN that says what a concept-world image shows, one head per attribute.

It is trained on renders only, with augmentation (tinted backgrounds, blur, noise, shifts) so it
reads generated images too. It is the oracle of every evaluation: no unlearning code may train
against it or read its gradients, so it only ever runs under `torch.no_grad()`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from workers.conceptworld.render import render_dataset
from workers.conceptworld.world import (
    CHARACTERS,
    COLOURS,
    SHAPES,
    TEXTURES,
    Concept,
    Scene,
)

HEADS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "texture": TEXTURES,
    "character": ("none",) + tuple(c.name for c in CHARACTERS),
}
FEATURE_DIM = 64


class JudgeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1),
                                 nn.BatchNorm2d(cout), nn.ReLU())

        self.body = nn.Sequential(block(3, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2),
                                  block(64, 96), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(96, FEATURE_DIM), nn.ReLU())
        self.heads = nn.ModuleDict({k: nn.Linear(FEATURE_DIM, len(v)) for k, v in HEADS.items()})

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = self.body(images * 2 - 1)
        return features, {k: head(features) for k, head in self.heads.items()}


@dataclass
class Verdicts:
    """What the judge read in each image: a label index per head (use `labels` for names)."""

    indices: dict[str, torch.Tensor]

    def labels(self, head: str) -> list[str]:
        return [HEADS[head][i] for i in self.indices[head].tolist()]

    def shows(self, concept: Concept) -> torch.Tensor:
        """Bool per image: the judge assigns the image to `concept` (every attribute matches)."""
        ok = torch.ones(len(next(iter(self.indices.values()))), dtype=torch.bool)
        for head, value in concept.attributes.items():
            ok &= self.indices[head] == HEADS[head].index(value)
        return ok


class Judge:
    def __init__(self, net: JudgeNet) -> None:
        self.net = net.eval().requires_grad_(False)

    @classmethod
    def load(cls, path: Path) -> Judge:
        net = JudgeNet()
        net.load_state_dict(load_file(str(path)))
        return cls(net)

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> Verdicts:
        """`images` (N, 3, H, W) in [0, 1]."""
        _, logits = self.net(images.float().cpu())
        return Verdicts({k: v.argmax(1) for k, v in logits.items()})

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float().cpu())[0]


def scene_labels(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    return {
        "shape": torch.tensor([SHAPES.index(s.shape) for s in scenes]),
        "colour": torch.tensor([HEADS["colour"].index(s.colour) for s in scenes]),
        "texture": torch.tensor([TEXTURES.index(s.texture) for s in scenes]),
        "character": torch.tensor([HEADS["character"].index(s.character or "none")
                                   for s in scenes]),
    }


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    taps = torch.arange(-2, 3).float()
    k = torch.exp(-(taps**2) / (2 * sigma * sigma))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 5, 5)
    return F.conv2d(F.pad(images, (2, 2, 2, 2), mode="replicate"), kernel, groups=3)


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, noise, ±1 px shifts and brightness changes: what generated images look like."""
    n = images.shape[0]
    level = torch.randint(0, 3, (n, 1, 1, 1), generator=gen)
    x = torch.where(level == 1, _blur(images, 0.6), images)
    x = torch.where(level == 2, _blur(images, 1.0), x)
    shifts = torch.randint(-1, 2, (2,), generator=gen).tolist()
    x = torch.roll(x, shifts=(shifts[0], shifts[1]), dims=(2, 3))
    x = x * (0.85 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen))
    x = x + torch.randn(x.shape, generator=gen) * (0.08 * torch.rand(n, 1, 1, 1, generator=gen))
    return x.clamp(0, 1)


def _to_tensor(images) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def train_judge(out_path: Path, *, seed: int = 1, steps: int = 1000, batch_size: int = 128,
                threads: int = 2) -> JudgeNet:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, scenes = render_dataset(60_000, seed=seed, character_share=0.35, background_max=110)
    data, labels = _to_tensor(images), scene_labels(scenes)
    net = JudgeNet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    net.train()
    for step in range(steps):
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        x = augment(data[idx], gen)
        x = torch.where(torch.rand(batch_size, 1, 1, 1, generator=gen) < 0.5, x.flip(-1), x)
        _, logits = net(x)
        loss = torch.stack([F.cross_entropy(logits[k], labels[k][idx]) for k in HEADS]).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            print(f"judge step {step} loss {loss.item():.4f}", flush=True)
    net.eval()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out_path))
    return net


def judge_accuracy(judge: Judge, n: int = 2000, seed: int = 987_654) -> dict[str, float]:
    """Per-head accuracy on fresh renders from a seed never used in training."""
    rng = random.Random(seed)
    images, scenes = render_dataset(n, seed=rng.randint(10**6, 10**7), character_share=0.3)
    verdicts = judge.read(_to_tensor(images))
    labels = scene_labels(scenes)
    return {k: float((verdicts.indices[k] == labels[k]).float().mean()) for k in HEADS}


def agreement_with_labels(judge: Judge, labels_path: Path, images_path: Path
                          ) -> dict[str, float]:
    """Share of hand-labelled generated images where the judge agrees, per head and on all four."""
    import json

    import numpy as np
    from PIL import Image

    labels = json.loads(labels_path.read_text())["labels"]
    strip = np.asarray(Image.open(images_path).convert("RGB"))
    size = strip.shape[0]
    tiles = np.stack([strip[:, i * size:(i + 1) * size] for i in range(len(labels))])
    verdicts = judge.read(_to_tensor(tiles))
    per_head = {h: float(np.mean([verdicts.labels(h)[i] == lab[h]
                                  for i, lab in enumerate(labels)])) for h in HEADS}
    all_heads = float(np.mean([all(verdicts.labels(h)[i] == lab[h] for h in HEADS)
                               for i, lab in enumerate(labels)]))
    return {**per_head, "all_heads": all_heads, "images": float(len(labels))}
