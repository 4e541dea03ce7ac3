"""Images of the synthetic benchmark: patterned shapes on a gradient background with distractors, an optional
layout badge and pixel noise, drawn with numpy + PIL (one random generator per note, so the bytes do not depend on
the order or the number of worker processes)."""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from notellm2_pl.data.synthetic.config import SyntheticConfig
from notellm2_pl.data.synthetic.vocabulary import ACCENTS, COLOURS, PATTERNS, SHAPES, Visual


def _regular(k: int, phase: float = 0.0) -> np.ndarray:
    t = phase + np.arange(k) * 2 * np.pi / k
    return np.stack([np.cos(t), np.sin(t)], 1)


def _unit_shape(shape: str) -> np.ndarray:
    """Polygon of a shape in unit coordinates (radius ~1), as ``(K, 2)``."""
    if shape == "circle":
        return _regular(48)
    if shape == "square":
        return _regular(4, np.pi / 4) * 1.1
    if shape == "triangle":
        return _regular(3, -np.pi / 2) * 1.15
    if shape == "pentagon":
        return _regular(5, -np.pi / 2)
    if shape == "hexagon":
        return _regular(6)
    if shape == "star":
        pts = _regular(10, -np.pi / 2)
        return pts * np.where(np.arange(10) % 2 == 0, 1.15, 0.5)[:, None]
    if shape == "cross":
        a, b = 0.36, 1.0
        return np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a),
                         (-b, -a), (-a, -a)])
    if shape == "diamond":
        return np.array([(0.0, -1.15), (0.65, 0.0), (0.0, 1.15), (-0.65, 0.0)])
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return np.stack([x, -y - 2.5], 1) / 15.0
    if shape == "crescent":
        # Outer unit circle minus a circle of radius 0.85 centred at (0.45, 0).
        outer = np.linspace(np.deg2rad(57.8), np.deg2rad(360 - 57.8), 36)
        inner = np.linspace(np.deg2rad(-84.4), np.deg2rad(-275.6), 30)
        pts_o = np.stack([np.cos(outer), np.sin(outer)], 1)
        pts_i = np.stack([0.45 + 0.85 * np.cos(inner), 0.85 * np.sin(inner)], 1)
        return np.concatenate([pts_o, pts_i]) * 1.1
    raise ValueError(f"unknown shape {shape!r}")


_UNIT_SHAPES: dict[str, np.ndarray] = {}


def _shape_alpha(shape: str, box: tuple[int, int, int, int], cx: float, cy: float, radius: float,
                 angle: float) -> np.ndarray:
    """Anti-aliased coverage ``(h, w)`` in [0, 1] over the pixel box ``(x0, y0, x1, y1)`` (2x supersampled)."""
    if shape not in _UNIT_SHAPES:
        _UNIT_SHAPES[shape] = _unit_shape(shape)
    pts = _UNIT_SHAPES[shape]
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    xy = (pts @ rot.T) * radius + np.array([cx - box[0], cy - box[1]])  # (K, 2) in box pixels
    ss = 2
    w, h = box[2] - box[0], box[3] - box[1]
    mask = Image.new("L", (w * ss, h * ss), 0)
    ImageDraw.Draw(mask).polygon([(float(x) * ss, float(y) * ss) for x, y in xy], fill=255)
    mask = mask.resize((w, h), Image.Resampling.BOX)
    return np.asarray(mask, dtype=np.float32) / 255.0


def _pattern_mask(pattern: str, grid: tuple[np.ndarray, np.ndarray], cx: float, cy: float, radius: float,
                  angle: float, period: float) -> np.ndarray:
    """Where the accent colour shows, ``(S, S)`` in {0, 1}, in the object's own (rotated, scaled) frame."""
    gx, gy = grid
    dx, dy = gx - cx, gy - cy
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / (radius * period)
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / (radius * period)
    fu, fv = u - np.floor(u), v - np.floor(v)
    if pattern == "solid":
        m = np.zeros_like(u, dtype=bool)
    elif pattern == "stripes":
        m = fu < 0.5
    elif pattern == "dots":
        m = (fu - 0.5) ** 2 + (fv - 0.5) ** 2 < 0.3**2
    elif pattern == "checker":
        m = (np.floor(u) + np.floor(v)) % 2 == 0
    elif pattern == "rings":
        r = np.sqrt(u**2 + v**2)
        m = r - np.floor(r) < 0.5
    elif pattern == "grid":
        m = (fu < 0.22) | (fv < 0.22)
    elif pattern == "chevron":
        w = u + np.abs(fv - 0.5) * 1.5
        m = w - np.floor(w) < 0.5
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    return m.astype(np.float32)


def _paint(img: np.ndarray, rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray], visual: Sequence[str],
           cx: float, cy: float, radius: float, jitter: float) -> None:
    """Composite one patterned shape onto ``img`` (``(S, S, 3)`` float32) in place, within its bounding box."""
    shape, colour, pattern, accent = visual
    angle = float(rng.uniform(0, 2 * np.pi))
    bright = float(rng.uniform(0.85, 1.1))
    primary = np.clip(np.array(COLOURS[colour], np.float32) * bright + rng.normal(0, jitter, 3), 0, 255)
    acc = np.clip(np.array(ACCENTS[accent], np.float32) + rng.normal(0, jitter / 2, 3), 0, 255)
    period = float(rng.uniform(0.3, 0.4))
    size = img.shape[0]
    reach = 1.2 * radius  # every unit shape lies within radius 1.2
    x0, y0 = max(0, math.floor(cx - reach)), max(0, math.floor(cy - reach))
    x1, y1 = min(size, math.ceil(cx + reach) + 1), min(size, math.ceil(cy + reach) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    alpha = _shape_alpha(shape, (x0, y0, x1, y1), cx, cy, radius, angle)[..., None]  # (h, w, 1)
    region = img[y0:y1, x0:x1]
    if pattern == "solid":
        col: np.ndarray = primary
    else:
        sub = (grid[0][y0:y1, x0:x1], grid[1][y0:y1, x0:x1])
        m = _pattern_mask(pattern, sub, cx, cy, radius, angle, period)[..., None]  # (h, w, 1)
        col = primary * (1 - m) + acc * m
    region *= 1 - alpha
    region += col * alpha


BADGE = ("square", "black", "checker", "white")
"""The badge's look (identical in every image; only its corner differs)."""


def _paint_badge(img: np.ndarray, rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray], corner: int) -> None:
    """The badge near corner ``corner`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right), slightly jittered."""
    s = img.shape[0]
    margin = 0.12 * s
    cx = margin if corner in (0, 2) else s - margin
    cy = margin if corner in (0, 1) else s - margin
    jx, jy = rng.uniform(-0.03, 0.03, 2) * s
    _paint(img, rng, grid, BADGE, float(cx + jx), float(cy + jy), 0.07 * s, 6.0)


def render_image(rng: np.random.Generator, cfg: SyntheticConfig, visual: Visual, corner: int = -1) -> Image.Image:
    """Draw one note's image: background, distractors behind and in front of the object, badge, noise.

    Args:
        rng: The note's own random generator.
        cfg: Generator settings (image size, distractors, noise, colour jitter).
        visual: The cluster's visual identity.
        corner: Badge corner 0-3, or -1 for no badge.

    Returns:
        An RGB image of ``cfg.image_size`` pixels square.
    """
    s = cfg.image_size
    coords = np.arange(s, dtype=np.float32) + 0.5
    grid = (coords[None, :].repeat(s, 0), coords[:, None].repeat(s, 1))  # x, y: (S, S) each
    # Background: a light random tint with a linear gradient in a random direction.
    base = rng.uniform(165, 240, 3).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = ((grid[0] - s / 2) * math.cos(theta) + (grid[1] - s / 2) * math.sin(theta)) / s  # (S, S) in ~[-.7, .7]
    img = base[None, None, :] + ramp[..., None] * rng.uniform(-40, 40, 3).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.float32)
    n_distract = int(rng.integers(cfg.distractors_min, cfg.distractors_max + 1))
    in_front = rng.random(n_distract) < 0.25
    distractors = []
    for _ in range(n_distract):
        pattern = str(rng.choice(PATTERNS))
        col = str(rng.choice(list(COLOURS)))
        accent = "none" if pattern == "solid" else ("white" if col == "black" else str(rng.choice(["white", "black"])))
        vis = (str(rng.choice(SHAPES)), col, pattern, accent)
        distractors.append((vis, rng.uniform(0, s, 2), s * float(rng.uniform(0.07, 0.14))))
    for (vis, (dx, dy), r), front in zip(distractors, in_front, strict=True):
        if not front:
            _paint(img, rng, grid, vis, float(dx), float(dy), r, 10.0)
    radius = s * float(rng.uniform(0.2, 0.3))
    cx, cy = rng.uniform(radius * 0.8, s - radius * 0.8, 2)
    _paint(img, rng, grid, visual, float(cx), float(cy), radius, cfg.colour_jitter)
    for (vis, (dx, dy), r), front in zip(distractors, in_front, strict=True):
        if front:
            _paint(img, rng, grid, vis, float(dx), float(dy), r, 10.0)
    if corner >= 0:  # drawn last, on top: no draw at all without badges, so those images are unchanged
        _paint_badge(img, rng, grid, corner)
    if cfg.noise_std > 0:
        h = (s + 1) // 2
        noise = rng.normal(0, cfg.noise_std, (h, h, 1)).astype(np.float32)  # grey grain: keeps PNGs small
        img += noise.repeat(2, 0).repeat(2, 1)[:s, :s]
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


RenderJob = tuple[int, str, Visual, int]
"""What one image needs: (note index, note id, visual identity, badge corner)."""


def _render_chunk(folder: str, config: SyntheticConfig, entropy: tuple[int, int], jobs: list[RenderJob]) -> int:
    """Draw and save the images of ``jobs``; each note has its own generator, so order and workers don't matter."""
    total = 0
    for k, note_id, visual, corner in jobs:
        rng = np.random.default_rng([entropy[0], entropy[1], k])
        path = Path(folder) / f"{note_id}.png"
        render_image(rng, config, visual, corner).save(path, format="PNG", optimize=False, compress_level=3)
        total += path.stat().st_size
    return total


def render_all(folder: Path, config: SyntheticConfig, entropy: tuple[int, int], jobs: list[RenderJob],
               num_workers: int | None) -> int:
    """Draw and save every image of ``jobs`` into ``folder`` as ``<note_id>.png``.

    Args:
        folder: Existing output folder.
        config: Generator settings.
        entropy: Seed words of the images' random streams (note ``k`` draws from ``[*entropy, k]``).
        jobs: One entry per note.
        num_workers: Processes (the bytes do not depend on it). ``None``: up to 4 for 1000 notes or more, else 0
            (in-process).

    Returns:
        Total bytes written.
    """
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if len(jobs) >= 1000 else 0
    if num_workers <= 1:
        return _render_chunk(str(folder), config, entropy, jobs)
    chunks = [jobs[i::num_workers * 4] for i in range(num_workers * 4)]
    # spawn, not fork: the caller may hold threads (torch, BLAS) that a forked child must not inherit.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx) as pool:
        return sum(pool.map(_render_chunk, [str(folder)] * len(chunks), [config] * len(chunks),
                            [entropy] * len(chunks), chunks))