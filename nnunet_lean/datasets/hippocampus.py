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

from nnunet_lean.datasets.geometry import bias_field, distance_to_curve, rotation, smooth_field
from nnunet_lean.datasets.raw import Case


def _centreline(rng: np.random.Generator, size: int, n: int = 48) -> Tuple[np.ndarray, np.ndarray]:
    """Points (n, 3) along a curved arc in voxel coordinates, and the arc parameter t in [0, 1]."""
    t = np.linspace(0.0, 1.0, n)
    radius = size * rng.uniform(0.30, 0.40)
    sweep = np.deg2rad(rng.uniform(90, 130))
    theta = -sweep / 2 + sweep * t
    lift = size * rng.uniform(-0.06, 0.06) * np.sin(np.pi * t)
    pts = np.stack([lift, radius * np.sin(theta), radius * (np.cos(theta) - np.cos(sweep / 2))], axis=1)
    pts -= pts.mean(axis=0)
    pts = pts @ rotation(rng, 20).T
    pts += size / 2 + rng.uniform(-0.05, 0.05, size=3) * size
    return pts, t


def make_case(seed: int, size: int = 48, multilabel: bool = False, noise: float = 0.04) -> Case:
    """One deterministic case: image (size³ float32, ~[0, 1]) and label (uint8)."""
    rng = np.random.default_rng(seed)
    shape = (size, size, size)
    pts, t = _centreline(rng, size)
    dist, nearest = distance_to_curve(shape, pts)
    t_vox = t[nearest]
    r_head, r_tail = size * rng.uniform(0.10, 0.13), size * rng.uniform(0.04, 0.06)
    radius = r_head + (r_tail - r_head) * t_vox
    inside = dist <= radius

    # brain-like background: white matter where a smooth field is high, grey matter elsewhere
    tissue = 1 / (1 + np.exp(-3 * smooth_field(rng, shape, size / 10)))
    image = 0.45 + 0.30 * tissue
    shell = (dist <= radius + 1.5) & ~inside
    image[shell] = 0.80  # alveus-like white-matter rim
    ventricle_centre = pts[len(pts) // 3] + rng.uniform(-1, 1, 3) + np.array([0, 0, r_head + 3.0])
    vz, vy, vx = np.ogrid[:size, :size, :size]
    ventricle = ((vz - ventricle_centre[0]) ** 2 + (vy - ventricle_centre[1]) ** 2 / 4
                 + (vx - ventricle_centre[2]) ** 2) <= (0.6 * r_head) ** 2
    image[ventricle & ~inside] = 0.15
    image[inside] = 0.58 + 0.04 * smooth_field(rng, shape, 2.0)[inside]
    image = ndimage.gaussian_filter(image, 0.7)  # partial volume
    image *= bias_field(rng, shape)
    n1, n2 = rng.normal(0, noise, shape), rng.normal(0, noise, shape)
    image = np.sqrt((image + n1) ** 2 + n2 ** 2)  # Rician magnitude noise

    label = inside.astype(np.uint8)
    if multilabel:
        label[inside & (t_vox > 0.4)] = 2
    return image.astype(np.float32), label


LABELS_SINGLE = {"background": 0, "hippocampus": 1}
LABELS_MULTI = {"background": 0, "anterior": 1, "posterior": 2}
