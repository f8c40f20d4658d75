"""Deterministic renderer of concept-world scenes (24×24 RGB, drawn at 4× and downsampled)."""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from workers.conceptworld.world import COLOURS, Scene, random_scene

IMAGE_SIZE = 24
_SUPERSAMPLE = 4
_CANVAS = IMAGE_SIZE * _SUPERSAMPLE


def _rotate(points: list[tuple[float, float]], angle: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(x * c - y * s, x * s + y * c) for x, y in points]


def _ellipse_points(rx: float, ry: float, n: int = 48, start: float = 0.0,
                    stop: float = 2 * math.pi) -> list[tuple[float, float]]:
    return [(rx * math.cos(start + (stop - start) * i / (n - 1)),
             ry * math.sin(start + (stop - start) * i / (n - 1))) for i in range(n)]


def shape_outline(shape: str, r: float) -> list[tuple[float, float]]:
    """Polygon of a shape of radius `r` centred on the origin (y grows downwards)."""
    if shape == "circle":
        return _ellipse_points(r, r)
    if shape == "ellipse":
        return _ellipse_points(r, 0.55 * r)
    if shape == "semicircle":  # flat side down, centred on its bounding box
        return [(x, y + 0.5 * r) for x, y in _ellipse_points(r, r, 32, math.pi, 2 * math.pi)]
    if shape == "square":
        h = 0.8 * r
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    if shape == "diamond":
        return [(0, -r), (0.8 * r, 0), (0, r), (-0.8 * r, 0)]
    if shape == "rectangle":
        return [(-r, -0.5 * r), (r, -0.5 * r), (r, 0.5 * r), (-r, 0.5 * r)]
    if shape == "triangle":
        return [(0, -r), (0.92 * r, 0.65 * r), (-0.92 * r, 0.65 * r)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a) + 0.1 * r))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


def _jitter_colour(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    return tuple(max(0, min(255, v + rng.randint(-12, 12))) for v in rgb)  # type: ignore[return-value]


def render_scene(scene: Scene, rng: random.Random, background_max: int = 40) -> np.ndarray:
    """One image (H, W, 3) uint8 of `scene`, with jitter of position, size, rotation and colour.

    The background is a random dark colour; a larger `background_max` tints it (judge training).
    """
    background = tuple(rng.randint(0, background_max) for _ in range(3))
    canvas = Image.new("RGB", (_CANVAS, _CANVAS), background)  # type: ignore[arg-type]
    r = rng.uniform(0.34, 0.42) * _CANVAS
    cx = _CANVAS / 2 + rng.uniform(-0.06, 0.06) * _CANVAS
    cy = _CANVAS / 2 + rng.uniform(-0.06, 0.06) * _CANVAS
    angle = math.radians(rng.uniform(-10, 10))
    outline = [(cx + x, cy + y) for x, y in _rotate(shape_outline(scene.shape, r), angle)]

    colour = _jitter_colour(COLOURS[scene.colour], rng)
    mask = Image.new("L", canvas.size, 0)
    draw = ImageDraw.Draw(mask)
    if scene.texture == "outlined":
        draw.polygon(outline, outline=255, width=2 * _SUPERSAMPLE)
    else:
        draw.polygon(outline, fill=255)
    canvas.paste(colour, mask=mask)  # type: ignore[arg-type]
    if scene.texture == "striped":
        stripes = Image.new("L", canvas.size, 0)
        sdraw = ImageDraw.Draw(stripes)
        period = 4 * _SUPERSAMPLE
        offset = rng.randint(0, period - 1)
        for y in range(-period + offset, _CANVAS, period):
            sdraw.rectangle([0, y, _CANVAS, y + period // 2 - 1], fill=255)
        dark = tuple(int(v * 0.3) for v in colour)
        canvas.paste(dark, mask=Image.fromarray(  # type: ignore[arg-type]
            np.minimum(np.asarray(mask), np.asarray(stripes))))
    if scene.character is not None:
        _draw_face(canvas, cx, cy, r, angle)
    small = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


def _draw_face(canvas: Image.Image, cx: float, cy: float, r: float, angle: float) -> None:
    draw = ImageDraw.Draw(canvas)
    eye = 0.16 * r
    for ex, ey in _rotate([(-0.34 * r, 0.0), (0.34 * r, 0.0)], angle):
        draw.ellipse([cx + ex - eye, cy + ey - eye, cx + ex + eye, cy + ey + eye],
                     fill=(245, 245, 245))


def render_dataset(n: int, seed: int, character_share: float = 0.25, background_max: int = 40
                   ) -> tuple[np.ndarray, list[Scene]]:
    """`n` random scenes and their images (N, H, W, 3) uint8; the same seed gives the same data."""
    rng = random.Random(seed)
    scenes = [random_scene(rng, character_share) for _ in range(n)]
    images = np.stack([render_scene(s, rng, background_max) for s in scenes])
    return images, scenes
