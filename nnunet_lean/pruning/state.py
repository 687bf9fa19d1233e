"""What a pruning run keeps besides its weights, and where: the file names of its fold folder, the
checkpoint key that carries the pruning state, and reading that state back (old sidecars included).

The pruning state is a JSON-able dict: strategy, importance point, initial widths and parameters,
the steps taken (epoch, picks, widths, channels and parameters left, pseudo-Dice), the targeted-
dropout probabilities, the pruning RNG state and whether pruning is done. Both the trainer (which
writes it) and the plots / readers (which read it) import this module, never each other.
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Optional

from nnunet_lean.errors import RunError

HISTORY_FILE = "pruning_history.json"   # the state without the RNG, rewritten after every step
PLOT_FILE = "pruning.png"
CHECKPOINT_KEY = "nnunet_lean_pruning"  # extra top-level key of every checkpoint a pruning trainer writes
LEGACY_SUFFIX = ".pruning.json"         # sidecar beside a checkpoint, written before the key existed


def history_of(state: Mapping) -> dict:
    """The state as written to the history file (the RNG state stays in the checkpoint)."""
    return {k: v for k, v in state.items() if k != "rng"}


def from_checkpoint(checkpoint: Mapping, path: Optional[str] = None) -> Optional[dict]:
    """The pruning state stored in ``checkpoint``; for checkpoints written before it was stored there,
    the legacy sidecar beside ``path``. None when the checkpoint has neither."""
    if CHECKPOINT_KEY in checkpoint:
        return checkpoint[CHECKPOINT_KEY]
    sidecar = (path or "") + LEGACY_SUFFIX
    if path and os.path.isfile(sidecar):
        with open(sidecar) as f:
            return json.load(f)
    return None


def read_history(fold_dir: str) -> dict:
    """A fold folder's pruning history; RunError names the fix."""
    src = os.path.join(fold_dir, HISTORY_FILE)
    if not os.path.isfile(src):
        raise RunError(f"no {HISTORY_FILE} in {fold_dir}: give the fold_X folder of a pruning run")
    with open(src) as f:
        return json.load(f)
