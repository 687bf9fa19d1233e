"""Write an nnU-Net v2 raw dataset folder atomically (a temp folder renamed at the end)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable, Dict, Iterable, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_lean.errors import LeanError

Case = Tuple[np.ndarray, np.ndarray]  # image (z, y, x) float32, label (z, y, x) uint8


class DatasetError(LeanError, ValueError):
    """Bad request for a dataset; the message names the fix."""


def raw_root() -> str:
    root = os.environ.get("nnUNet_raw")
    if not root:
        raise DatasetError("nnUNet_raw is not set: export nnUNet_raw=/path/to/nnUNet_raw")
    return root


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise DatasetError(f"dataset id must be 1..999, got {dataset_id}")
    return f"Dataset{dataset_id:03d}_{name}"


def existing_with_id(root: str, dataset_id: int) -> list:
    prefix = f"Dataset{dataset_id:03d}_"
    return sorted(d for d in os.listdir(root) if d.startswith(prefix)) if os.path.isdir(root) else []


def write_image(arr: np.ndarray, spacing: Tuple[float, ...], path: str) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # numpy (z,y,x) -> ITK (x,y,z)
    sitk.WriteImage(img, path, useCompression=True)


def write_dataset(dataset_id: int, name: str, labels: Dict[str, int], channel_names: Dict[str, str],
                  make_case: Callable[[int], Case], n_train: int, n_test: int,
                  spacing: Tuple[float, ...], overwrite: bool = False,
                  extra: Dict[str, object] = None) -> str:
    """Write ``n_train`` cases to imagesTr/labelsTr and ``n_test`` to imagesTs/labelsTs.

    ``make_case(i)`` returns case ``i`` (deterministic in ``i``). Returns the dataset folder.
    """
    if n_train < 2:
        raise DatasetError(f"need at least 2 training cases, got {n_train}")
    if n_test < 0:
        raise DatasetError(f"test cases must be >= 0, got {n_test}")
    root = raw_root()
    folder = dataset_folder_name(dataset_id, name)
    clash = existing_with_id(root, dataset_id)
    if clash and not overwrite:
        raise DatasetError(f"{os.path.join(root, clash[0])} exists: pass --overwrite or pick another -d")
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{folder}.", dir=root)
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            os.makedirs(os.path.join(tmp, sub))
        for i, split in _enumerate_cases(n_train, n_test):
            image, label = make_case(i)
            case = f"{name}_{i:03d}"
            write_image(image.astype(np.float32), spacing, os.path.join(tmp, f"images{split}", case + "_0000.nii.gz"))
            write_image(label.astype(np.uint8), spacing, os.path.join(tmp, f"labels{split}", case + ".nii.gz"))
        meta = {"channel_names": channel_names, "labels": labels, "numTraining": n_train,
                "file_ending": ".nii.gz", "name": name, **(extra or {})}
        with open(os.path.join(tmp, "dataset.json"), "w") as f:
            json.dump(meta, f, indent=2)
        for old in clash:
            shutil.rmtree(os.path.join(root, old))
        target = os.path.join(root, folder)
        os.rename(tmp, target)
        return target
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _enumerate_cases(n_train: int, n_test: int) -> Iterable[Tuple[int, str]]:
    for i in range(n_train + n_test):
        yield i, ("Tr" if i < n_train else "Ts")
