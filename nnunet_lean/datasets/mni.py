"""Real anatomy without a download: the MNI152 (ICBM 2009a symmetric) T1 template and its grey- and
white-matter probability maps, which the ``nilearn`` wheel ships as package data, turned into many
cases by a random affine and elastic deformation, a bias field and noise.

Labels: 1 grey matter, 2 white matter (where that tissue's probability is > 0.5 and the larger).
nilearn itself is never imported: only its data files are read (with SimpleITK).
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_lean.datasets.geometry import bias_field, rotation
from nnunet_lean.datasets.raw import Case, DatasetError

LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2}
FILES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}


def template_folder() -> str:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the MNI dataset reads the template shipped in the nilearn wheel: pip install nilearn")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    missing = [f for f in FILES.values() if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DatasetError(f"{missing[0]} not found in {folder}: reinstall nilearn (pip install -U nilearn)")
    return folder


@functools.lru_cache(maxsize=4)
def template(spacing: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, GM and WM maps resampled to ``spacing`` mm (numpy z, y, x), T1 scaled to [0, 1]."""
    folder = template_folder()
    out = []
    for key in ("t1", "gm", "wm"):
        img = sitk.ReadImage(os.path.join(folder, FILES[key]), sitk.sitkFloat32)
        size = [int(round(n * s / spacing)) for n, s in zip(img.GetSize(), img.GetSpacing())]
        res = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), [spacing] * 3,
                            img.GetDirection(), 0.0, sitk.sitkFloat32)
        out.append(sitk.GetArrayFromImage(res))
    t1 = out[0] / max(float(np.percentile(out[0], 99.5)), 1e-6)
    return np.clip(t1, 0, 1.2), out[1], out[2]


def make_case(seed: int, spacing: float = 3.0, elastic_mm: float = 3.0, noise: float = 0.03) -> Case:
    """One deterministic case at ``spacing`` mm: deformed template image and its tissue labels."""
    rng = np.random.default_rng(seed)
    t1, gm, wm = template(spacing)
    shape = t1.shape
    centre = (np.array(shape) - 1) / 2
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    # output voxel -> template voxel: rotation + scaling about the centre, translation, smooth warp
    matrix = rotation(rng, 10) * rng.uniform(0.92, 1.08)
    shift = rng.uniform(-4, 4, 3) / spacing
    coords = np.tensordot(matrix, grid.reshape(3, -1) - centre[:, None], axes=1) + centre[:, None] + shift[:, None]
    sigma = 10.0 / spacing
    for axis in range(3):
        warp = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
        warp *= (elastic_mm / spacing) / (warp.std() + 1e-8)
        coords[axis] += warp.reshape(-1)
    sample = lambda vol: ndimage.map_coordinates(vol, coords, order=1, mode="constant").reshape(shape)
    image, g, w = sample(t1), sample(gm), sample(wm)
    label = np.zeros(shape, np.uint8)
    label[(g > 0.5) & (g >= w)] = 1
    label[(w > 0.5) & (w > g)] = 2
    image = image * bias_field(rng, shape, 0.2)
    n1, n2 = rng.normal(0, noise, shape), rng.normal(0, noise, shape)
    image = np.sqrt((image + n1) ** 2 + n2 ** 2)
    return image.astype(np.float32), label
