"""Hippocampus-like synthetic T1 MRI: a curved, tapering tube in brain-like tissue.

Each case: a smooth grey/white-matter texture, a dark ventricle beside a curved structure
(thick head, thin tail) wrapped in a thin bright white-matter shell, partial-volume blur,
a multiplicative bias field and Rician noise. Optional two labels: head (1) and body/tail (2),
as in the Medical Segmentation Decathlon's hippocampus task.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import ndimage

from nnunet_lean.datasets.raw import Case


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    cz, cy, cx = np.cos(angles)
    sz, sy, sx = np.sin(angles)
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _centreline(rng: np.random.Generator, size: int, n: int = 48) -> Tuple[np.ndarray, np.ndarray]:
    """Points (n, 3) along a curved arc in voxel coordinates, and the arc parameter t in [0, 1]."""
    t = np.linspace(0.0, 1.0, n)
    radius = size * rng.uniform(0.30, 0.40)
    sweep = np.deg2rad(rng.uniform(90, 130))
    theta = -sweep / 2 + sweep * t
    lift = size * rng.uniform(-0.06, 0.06) * np.sin(np.pi * t)
    pts = np.stack([lift, radius * np.sin(theta), radius * (np.cos(theta) - np.cos(sweep / 2))], axis=1)
    pts -= pts.mean(axis=0)
    pts = pts @ _rotation(rng, 20).T
    pts += size / 2 + rng.uniform(-0.05, 0.05, size=3) * size
    return pts, t


def _distance_to_curve(shape: Tuple[int, int, int], pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per voxel: distance to the nearest centreline point and that point's index."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), -1)
    flat = grid.reshape(-1, 3)
    best = np.full(len(flat), np.inf, dtype=np.float32)
    idx = np.zeros(len(flat), dtype=np.int64)
    for i, p in enumerate(pts.astype(np.float32)):
        d = np.sum((flat - p) ** 2, axis=1)
        closer = d < best
        best[closer] = d[closer]
        idx[closer] = i
    return np.sqrt(best).reshape(shape), idx.reshape(shape)


def _smooth_field(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (f - f.mean()) / (f.std() + 1e-8)


def _bias_field(rng: np.random.Generator, shape, strength: float = 0.25) -> np.ndarray:
    coords = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    log_field = sum(rng.uniform(-strength, strength) * c for c in coords)
    log_field += sum(rng.uniform(-strength, strength) * c ** 2 for c in coords) / 2
    return np.exp(log_field)


def make_case(seed: int, size: int = 48, multilabel: bool = False, noise: float = 0.04) -> Case:
    """One deterministic case: image (size³ float32, ~[0, 1]) and label (uint8)."""
    rng = np.random.default_rng(seed)
    shape = (size, size, size)
    pts, t = _centreline(rng, size)
    dist, nearest = _distance_to_curve(shape, pts)
    t_vox = t[nearest]
    r_head, r_tail = size * rng.uniform(0.10, 0.13), size * rng.uniform(0.04, 0.06)
    radius = r_head + (r_tail - r_head) * t_vox
    inside = dist <= radius

    # brain-like background: white matter where a smooth field is high, grey matter elsewhere
    tissue = 1 / (1 + np.exp(-3 * _smooth_field(rng, shape, size / 10)))
    image = 0.45 + 0.30 * tissue
    shell = (dist <= radius + 1.5) & ~inside
    image[shell] = 0.80  # alveus-like white-matter rim
    ventricle_centre = pts[len(pts) // 3] + rng.uniform(-1, 1, 3) + np.array([0, 0, r_head + 3.0])
    vz, vy, vx = np.ogrid[:size, :size, :size]
    ventricle = ((vz - ventricle_centre[0]) ** 2 + (vy - ventricle_centre[1]) ** 2 / 4
                 + (vx - ventricle_centre[2]) ** 2) <= (0.6 * r_head) ** 2
    image[ventricle & ~inside] = 0.15
    image[inside] = 0.58 + 0.04 * _smooth_field(rng, shape, 2.0)[inside]
    image = ndimage.gaussian_filter(image, 0.7)  # partial volume
    image *= _bias_field(rng, shape)
    n1, n2 = rng.normal(0, noise, shape), rng.normal(0, noise, shape)
    image = np.sqrt((image + n1) ** 2 + n2 ** 2)  # Rician magnitude noise

    label = inside.astype(np.uint8)
    if multilabel:
        label[inside & (t_vox > 0.4)] = 2
    return image.astype(np.float32), label


LABELS_SINGLE = {"background": 0, "hippocampus": 1}
LABELS_MULTI = {"background": 0, "anterior": 1, "posterior": 2}
