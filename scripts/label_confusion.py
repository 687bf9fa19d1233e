"""Which labels a segmentation mixes up: voxel counts of (reference label, predicted label), summed over cases.

    python scripts/label_confusion.py LABELS_DIR PRED_DIR [PRED_DIR ...] [--pairs 4,5 1,2]

LABELS_DIR holds the reference segmentations (e.g. a dataset's labelsTs), each PRED_DIR the predictions of one
run under the same file names (nnUNetv2_predict's output). Prints, per PRED_DIR, the confusion matrix summed over
the cases (rows: reference, columns: prediction; background-background left out), and with --pairs the voxels
swapped between each pair of labels (both directions), per case. Dice per label says how much a label lost;
this says to which label it went (e.g. left and right bronchus swapped, or a boundary between two labels moved).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from nnunet_lean.errors import LeanError, exit_on_error


def read_segmentation(path: Path) -> np.ndarray:
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    seg, _ = SimpleITKIO().read_seg(str(path))
    return seg.astype(np.int64)


def check_folders(labels_dir: Path, pred_dirs: list) -> list:
    """The reference files; LeanError before anything is read if a folder lacks any of them."""
    if not labels_dir.is_dir():
        raise LeanError(f"{labels_dir} is not a folder: pass the reference labels folder (e.g. labelsTs) first")
    refs = sorted(p for p in labels_dir.iterdir() if p.name.endswith(".nii.gz"))
    if not refs:
        raise LeanError(f"no .nii.gz segmentations in {labels_dir}: pass the reference labels folder first")
    for pred_dir in pred_dirs:
        missing = [p.name for p in refs if not (pred_dir / p.name).is_file()]
        if missing:
            raise LeanError(f"{pred_dir} lacks {len(missing)} of {len(refs)} cases (e.g. {missing[0]}): "
                            "pass the folder nnUNetv2_predict wrote for these cases")
    return refs


def confusion(labels_dir: Path, pred_dir: Path) -> tuple:
    """(matrix summed over cases, {case: matrix}) for every reference file that has a prediction."""
    per_case = {}
    for ref in check_folders(labels_dir, [pred_dir]):
        gt, pr = read_segmentation(ref), read_segmentation(pred_dir / ref.name)
        if gt.shape != pr.shape:
            raise LeanError(f"{pred_dir / ref.name} has shape {pr.shape}, its reference {gt.shape}: "
                            "pass predictions of these very cases at their original resolution")
        n = int(max(gt.max(), pr.max())) + 1
        per_case[ref.name] = np.bincount((gt * n + pr).ravel(), minlength=n * n).reshape(n, n)
    n = max(m.shape[0] for m in per_case.values())
    total = np.zeros((n, n), np.int64)
    for m in per_case.values():
        total[:m.shape[0], :m.shape[1]] += m
    return total, per_case


def swapped(m: np.ndarray, a: int, b: int) -> int:
    return int(m[a, b] + m[b, a]) if max(a, b) < m.shape[0] else 0


def flipped(m: np.ndarray, a: int, b: int) -> bool:
    """More than half of the reference voxels of labels a and b got the other one's label (e.g. a whole
    bronchial tree with left and right exchanged)."""
    if max(a, b) >= m.shape[0]:
        return False
    return bool(2 * swapped(m, a, b) > m[a].sum() + m[b].sum())


def parse_pairs(pairs: list) -> list:
    """"a,b" strings as (a, b): two different labels >= 0; LeanError otherwise."""
    parsed = []
    for p in pairs:
        try:
            a, b = (int(x) for x in p.split(","))
        except ValueError:
            a = b = -1
        if a < 0 or b < 0 or a == b:
            raise LeanError(f"--pairs takes pairs of two different labels like 4,5 (got {p!r})")
        parsed.append((a, b))
    return parsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels_dir", type=Path)
    ap.add_argument("pred_dirs", type=Path, nargs="+")
    ap.add_argument("--pairs", nargs="*", default=[], help="label pairs a,b whose swapped voxels to list per case")
    args = ap.parse_args()
    pairs = parse_pairs(args.pairs)
    check_folders(args.labels_dir, args.pred_dirs)
    for pred_dir in args.pred_dirs:
        total, per_case = confusion(args.labels_dir, pred_dir)
        total[0, 0] = 0
        print(f"{pred_dir} ({len(per_case)} cases; rows: reference label, columns: predicted label)")
        print(np.array2string(total, max_line_width=200))
        for a, b in pairs:
            cases = " ".join(f"{c.split('.')[0]}:{swapped(m, a, b)}" for c, m in per_case.items() if swapped(m, a, b))
            flips = [c.split(".")[0] for c, m in per_case.items() if flipped(m, a, b)]
            print(f"  {a}<->{b} swapped: {swapped(total, a, b)} voxels ({cases or 'none'}); "
                  f"cases with more than half of them swapped: {len(flips)} ({' '.join(flips) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "label_confusion.py"))
