"""Dice of every deep-supervision output of a trained fold on its validation cases (or its training cases).

Tells which resolution of a network has learned: a U-Net whose full-resolution output predicts
background everywhere can still segment well at half resolution (its loss falls while nnU-Net's
pseudo-Dice, taken at full resolution, stays 0). On the fold's training cases it tells how well a network
fits what it trained on: a narrow network below the default there lacks capacity or optimisation, not
generalisation.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple, Union

import numpy as np
import torch

from nnunet_lean.errors import RunError
from nnunet_lean.runs import TrainedFold, load_predictor


CASES = ("val", "train")


class OutputDice(NamedTuple):
    factor: Tuple[int, ...]        # downsampling factor per axis (1, 1, 1) = full resolution
    dice: float                    # foreground mean over the labels present in the cases
    dice_per_label: Dict[str, float]  # label value -> Dice (NaN where the label is absent from every case)


def fold_cases(preprocessed: Path, fold: Union[int, str], cases: str = "val") -> List[str]:
    """The fold's validation (``val``) or training (``train``) case ids from splits_final.json; fold "all"
    trained and validated on every case."""
    if cases not in CASES:
        raise RunError(f"cases must be one of {', '.join(CASES)}, not {cases!r}")
    splits = preprocessed / "splits_final.json"
    if not splits.is_file():
        raise RunError(f"{splits} is missing: set nnUNet_preprocessed to the folder the fold was trained from")
    folds = json.loads(splits.read_text())
    if fold == "all":
        return sorted({c for s in folds for c in s["train"] + s["val"]})
    return sorted(folds[fold][cases])


def _dice(pred: torch.Tensor, target: torch.Tensor, labels: List[int]) -> List[Tuple[int, int, int]]:
    """(true positives, predicted, reference) voxels per label; target < 0 is ignored."""
    valid = target >= 0
    return [(int(((pred == k) & (target == k) & valid).sum()), int(((pred == k) & valid).sum()),
             int((target == k).sum())) for k in labels]


def deep_supervision_dice(fold_dir: str, device: str = "cpu", cases: str = "val") -> List[OutputDice]:
    """Downsampling factor per axis, foreground-mean and per-label Dice of each output, full resolution first,
    on the fold's validation cases (``cases="val"``) or its training cases (``"train"``).

    Each case runs whole (zero-padded to the network's total stride); the Dice of a label pools the voxels
    of all cases; labels absent from every case are left out of the mean.
    """
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    run = TrainedFold.open(fold_dir)
    fold = run.fold
    predictor = load_predictor([run], "checkpoint_final.pth", device, allow_tqdm=False)
    if predictor.label_manager.has_regions:
        raise RunError("region-based plans are not supported: their outputs are not one label per voxel")
    dataset = Path(nnUNet_preprocessed or "") / predictor.plans_manager.dataset_name
    data = dataset / predictor.configuration_manager.data_identifier
    if not data.is_dir():
        raise RunError(f"{data} is missing: set nnUNet_preprocessed to the folder the fold was trained from")
    case_ids = fold_cases(dataset, fold, cases)
    if not case_ids:
        raise RunError(f"fold {fold} has no {cases} cases in {dataset / 'splits_final.json'}")
    net = predictor.network
    net.load_state_dict(predictor.list_of_parameters[0])
    net.eval()
    net.decoder.deep_supervision = True
    pools = np.array(predictor.configuration_manager.pool_op_kernel_sizes)
    stride = pools.prod(axis=0)
    labels = [int(k) for k in predictor.label_manager.foreground_labels]
    counts = None
    ds = infer_dataset_class(str(data))(str(data), case_ids)
    for case in case_ids:
        image, seg = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in ds.load_case(case)[:2])
        pad = [int(-s % st) for s, st in zip(image.shape[1:], stride)]
        flat = [p for side in reversed(pad) for p in (0, side)]
        image = torch.nn.functional.pad(image, flat)[None].to(device)
        seg = torch.nn.functional.pad(seg, flat, value=-1)[None]
        with torch.no_grad():
            outputs = net(image)
        rows = [_dice(o[0].argmax(0).cpu(),
                      torch.nn.functional.interpolate(seg, size=o.shape[2:], mode="nearest")[0, 0], labels)
                for o in outputs]
        counts = rows if counts is None else [[tuple(map(sum, zip(a, b))) for a, b in zip(r, c)]
                                              for r, c in zip(rows, counts)]
    result = []
    for i, per_label in enumerate(counts):
        dices = {str(k): 2 * tp / (p + r) if r > 0 else float("nan") for k, (tp, p, r) in zip(labels, per_label)}
        present = [d for d in dices.values() if not np.isnan(d)]
        factor = tuple(int(f) for f in pools[:i + 1].prod(axis=0))  # pools[0] is the input stage's (1, 1, 1)
        result.append(OutputDice(factor, float(np.mean(present)) if present else float("nan"), dices))
    return result


def _scale(factor: Tuple[int, ...]) -> str:
    if max(factor) == 1:
        return "full"
    return f"1/{factor[0]}" if len(set(factor)) == 1 else "1/(" + ",".join(map(str, factor)) + ")"


def format_row(fold_dir: str, result: List[OutputDice]) -> str:
    """One line: the fold folder, then ``resolution: Dice`` per output."""
    return os.path.relpath(fold_dir) + "  " + ", ".join(f"{_scale(o.factor)}: {o.dice:.3f}" for o in result)
