"""Airway-tree-like synthetic CT (the LUnet paper's trachea task, TT): air-filled branching tubes
with soft-tissue walls inside two lungs, in Hounsfield-like units.

Labels (lumen only): 1 trachea, 2 trachea extension (its lower part), 3 carina (the bifurcation),
4 left and 5 right bronchi with their first sub-branches.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
from scipy import ndimage

from nnunet_lean.datasets.geometry import distance_to_curve, rotation, smooth_field
from nnunet_lean.datasets.raw import Case

LABELS = {"background": 0, "trachea": 1, "trachea_extension": 2, "carina": 3, "left_bronchus": 4,
          "right_bronchus": 5}


def _segment(a: np.ndarray, b: np.ndarray, n: int = 24) -> np.ndarray:
    return a + (b - a) * np.linspace(0, 1, n)[:, None]


def _direction(angle: float, jitter: np.ndarray) -> np.ndarray:
    """Unit vector pointing down (+z), turned ``angle`` radians towards +x (negative: towards -x)."""
    v = np.array([np.cos(angle), 0.0, np.sin(angle)]) + jitter
    return v / np.linalg.norm(v)


def _tube(shape, pts: np.ndarray, radius: float) -> Tuple[np.ndarray, np.ndarray]:
    dist, _ = distance_to_curve(shape, pts)
    return dist <= radius, dist


def make_case(seed: int, size: int = 64, noise_hu: float = 25.0) -> Case:
    """One deterministic case: image (size³, HU-like float32) and label (uint8, 0..5)."""
    rng = np.random.default_rng(seed)
    shape = (size, size, size)
    zz, yy, xx = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    c = size / 2

    # body and lungs
    body = ((yy - c) / (0.45 * size)) ** 2 + ((xx - c) / (0.48 * size)) ** 2 <= 1
    lungs = np.zeros(shape, bool)
    for side in (-1, 1):
        centre = np.array([0.6 * size, c + rng.uniform(-2, 2), c + side * 0.22 * size])
        radii = np.array([0.42, 0.32, 0.17]) * size * rng.uniform(0.9, 1.1, 3)
        lungs |= (((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2
                  + ((xx - centre[2]) / radii[2]) ** 2) <= 1
    image = np.full(shape, -1000.0, np.float32)
    image[body] = 40.0
    image[lungs & body] = -850.0 + 40.0 * smooth_field(rng, shape, 1.5)[lungs & body]

    # the tree: trachea down to the carina, two main bronchi, each with two sub-branches
    top = np.array([0.0, c + rng.uniform(-2, 2), c + rng.uniform(-2, 2)])
    carina = np.array([size * rng.uniform(0.42, 0.5), top[1] + rng.uniform(-2, 2), top[2] + rng.uniform(-2, 2)])
    r_trachea = size * rng.uniform(0.05, 0.065)
    tilt = rotation(rng, 6)
    branches: List[Tuple[int, np.ndarray, float]] = []
    for label, side, angle in ((4, 1, rng.uniform(0.7, 0.85)), (5, -1, rng.uniform(0.45, 0.6))):
        d = tilt @ _direction(side * angle, rng.normal(0, 0.05, 3))
        end = carina + d * size * rng.uniform(0.22, 0.28)
        branches.append((label, _segment(carina, end), 0.7 * r_trachea))
        for turn in (-0.45, 0.45):
            d2 = tilt @ _direction(side * angle + turn, rng.normal(0, 0.05, 3))
            branches.append((label, _segment(end, end + d2 * size * rng.uniform(0.12, 0.18), 16),
                             0.45 * r_trachea))

    label = np.zeros(shape, np.uint8)
    wall = np.zeros(shape, bool)
    trachea, dist = _tube(shape, _segment(top, carina), r_trachea)
    wall |= (dist <= r_trachea + 1.2) & ~trachea
    split = top[0] + (carina[0] - top[0]) * rng.uniform(0.55, 0.7)
    label[trachea & (zz < split)] = 1
    label[trachea & (zz >= split)] = 2
    for lab, pts, r in branches:
        lumen, dist = _tube(shape, pts, r)
        wall |= (dist <= r + 1.0) & ~lumen
        label[lumen & (label == 0)] = lab
    carina_zone = ((zz - carina[0]) ** 2 + (yy - carina[1]) ** 2 + (xx - carina[2]) ** 2) <= (1.3 * r_trachea) ** 2
    label[carina_zone & (label > 0)] = 3
    label[~body] = 0

    image[wall & body] = -80.0
    image[label > 0] = -1000.0
    image = ndimage.gaussian_filter(image, 0.6) + rng.normal(0, noise_hu, shape)
    return image.astype(np.float32), label
