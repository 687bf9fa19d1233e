"""Shape and intensity helpers shared by the synthetic datasets."""
from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import ndimage


def rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    cz, cy, cx = np.cos(angles)
    sz, sy, sx = np.sin(angles)
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    return rz @ ry @ rx


def distance_to_curve(shape: Tuple[int, int, int], pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
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


def smooth_field(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (f - f.mean()) / (f.std() + 1e-8)


def bias_field(rng: np.random.Generator, shape, strength: float = 0.25) -> np.ndarray:
    coords = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    log_field = sum(rng.uniform(-strength, strength) * c for c in coords)
    log_field += sum(rng.uniform(-strength, strength) * c ** 2 for c in coords) / 2
    return np.exp(log_field)
