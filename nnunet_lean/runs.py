"""Read a trained nnU-Net run: the one place that knows a fold folder's name, its checkpoints and what
they hold (weights, widths, nnU-Net's training log, the pruning state), and an evaluated folder's Dice.

nnU-Net lays a run out as ``nnUNet_results/DatasetX/TRAINER__PLANS__CONFIGURATION/fold_N`` and stores
in each checkpoint ``network_weights`` and its log under ``logging`` (epoch start/end timestamps,
pseudo-Dice per epoch and its EMA). Every command of ours that reads a run goes through here.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from nnunet_lean.errors import RunError
from nnunet_lean.measure.phases import read_phases
from nnunet_lean.pruning import state as pruning_state

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")
SEPARATOR = "__"  # nnU-Net's separator in TRAINER__PLANS__CONFIGURATION


def model_folder_name(trainer: str, plans: str, configuration: str) -> str:
    return SEPARATOR.join((trainer, plans, configuration))


def fold_folder(dataset_results: Union[str, Path], trainer: str, plans: str, configuration: str,
                fold: Union[int, str]) -> Path:
    """``nnUNet_results/DatasetX`` + the run's folder + ``fold_N``."""
    return Path(dataset_results) / model_folder_name(trainer, plans, configuration) / f"fold_{fold}"


def load_checkpoint(path: Union[str, Path], mmap: bool = False) -> dict:
    """A checkpoint as nnU-Net wrote it (on the CPU); ``mmap``: tensors are read only when touched."""
    return torch.load(str(path), map_location="cpu", weights_only=False, mmap=mmap)


@dataclass(frozen=True)
class TrainedFold:
    """One ``fold_N`` folder of a trained (or training) run."""
    path: Path
    fold: Union[int, str]   # an int, or "all"

    @classmethod
    def open(cls, fold_dir: Union[str, Path]) -> "TrainedFold":
        path = Path(fold_dir).expanduser().resolve()
        if not path.is_dir():
            raise RunError(f"{fold_dir} does not exist: give .../TRAINER__PLANS__CONFIG/fold_N")
        if not path.name.startswith("fold_"):
            raise RunError(f"{fold_dir} is not a fold folder: give .../TRAINER__PLANS__CONFIG/fold_N")
        fold = path.name[len("fold_"):]
        return cls(path, int(fold) if fold.isdigit() else fold)

    @property
    def name_parts(self) -> Tuple[str, str, str]:
        """(trainer, plans, configuration) from the run folder's name."""
        parts = self.path.parent.name.split(SEPARATOR)
        if len(parts) != 3:
            raise RunError(f"{self.path} is not inside a TRAINER__PLANS__CONFIGURATION folder")
        return parts[0], parts[1], parts[2]

    @property
    def trainer(self) -> str:
        return self.name_parts[0]

    @property
    def plans(self) -> str:
        return self.name_parts[1]

    @property
    def configuration(self) -> str:
        return self.name_parts[2]

    @property
    def model_folder(self) -> Path:
        """The run's folder (what nnU-Net's predictor reads: plans.json, dataset.json, fold_N)."""
        return self.path.parent

    @property
    def dataset_name(self) -> str:
        return self.model_folder.parent.name

    def checkpoints(self) -> List[str]:
        """The checkpoints present, final first."""
        return [c for c in CHECKPOINTS if (self.path / c).is_file()]

    def checkpoint_path(self, name: Optional[str] = None) -> Path:
        """``name``, or the first present of final / best / latest; RunError names the fix."""
        if name is not None:
            if not (self.path / name).is_file():
                have = ", ".join(self.checkpoints()) or "none"
                raise RunError(f"{self.path} has no {name}: finish the training first (present: {have})")
            return self.path / name
        present = self.checkpoints()
        if not present:
            raise RunError(f"{self.path} holds no checkpoint: train it first (nnUNetv2_train)")
        return self.path / present[0]

    def load(self, name: Optional[str] = None) -> dict:
        return load_checkpoint(self.checkpoint_path(name))

    def weights(self, name: Optional[str] = None) -> Dict[str, torch.Tensor]:
        return self.load(name)["network_weights"]

    def widths(self, name: Optional[str] = None) -> Dict[str, int]:
        """Output channels of every conv of the trained network, by its state-dict name."""
        return conv_widths(self.weights(name))

    def training_log(self) -> dict:
        """nnU-Net's log (epoch timestamps, pseudo-Dice and its EMA per epoch) from whichever checkpoint
        holds the most epochs: a finished run's final one, an unfinished run's latest or best."""
        present = self.checkpoints()
        if not present:
            raise RunError(f"{self.path} holds no checkpoint: train it first (nnUNetv2_train)")
        logs = []
        for name in present:
            log = load_checkpoint(self.path / name, mmap=True).get("logging")
            if not log or not log.get("epoch_end_timestamps"):
                raise RunError(f"{self.path / name} holds no nnU-Net training log: not a checkpoint of nnUNetv2_train")
            logs.append(log)
        return max(logs, key=lambda log: len(log["epoch_end_timestamps"]))

    def epoch_phases(self) -> List[Dict[str, float]]:
        """Per epoch, in epoch order, where its time went (trainers with nnunet_lean.measure.phases.EpochPhases),
        from the fold's text logs. A resumed run has one log per start and trains again the epochs after its last
        checkpoint: the later log's line of an epoch is kept (that epoch's time in nnU-Net's own log)."""
        def started(log: Path) -> Tuple[int, ...]:   # training_log_2026_9_30_08_05_01.txt: no zero padding
            return tuple(int(x) for x in log.stem.split("_")[2:])
        rows = {}
        for log in sorted(self.path.glob("training_log_*.txt"), key=started):
            rows.update((int(r["epoch"]), r) for r in read_phases(log.read_text()))
        return [rows[e] for e in sorted(rows)]

    def pruning_state(self, name: Optional[str] = None) -> Optional[dict]:
        """The pruning state a pruning trainer stored with the checkpoint (or its legacy sidecar)."""
        path = self.checkpoint_path(name)
        return pruning_state.from_checkpoint(load_checkpoint(path), str(path))

    def pruning_history(self) -> dict:
        """The fold's pruning history file; RunError when this is not a pruning run."""
        return pruning_state.read_history(str(self.path))


def load_predictor(folds: Sequence[TrainedFold], checkpoint_name: str = "checkpoint_final.pth",
                   device: str = "cpu", **predictor_kwargs):
    """nnU-Net's own nnUNetPredictor set up from trained folds of ONE run folder, as nnUNetv2_predict does
    (its network built by the trainer's build_network_architecture, one weight set per fold). Each fold
    is checked first, so a missing fold or checkpoint is a RunError naming it, not a traceback."""
    import contextlib
    import io

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if not folds:
        raise RunError("no fold given")
    model_folders = {f.model_folder for f in folds}
    if len(model_folders) != 1:
        raise RunError(f"folds of one run folder only, got {', '.join(sorted(map(str, model_folders)))}")
    for f in folds:
        f.checkpoint_path(checkpoint_name)
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its device choice and trainer search
        predictor = nnUNetPredictor(device=torch.device(device), **predictor_kwargs)
        predictor.initialize_from_trained_model_folder(str(folds[0].model_folder), tuple(f.fold for f in folds),
                                                       checkpoint_name)
    return predictor


def run_folds(model_folder: Union[str, Path], folds: Sequence[Union[int, str]]) -> List[TrainedFold]:
    """``fold_N`` of a run folder as TrainedFolds; RunError names a missing one and those present."""
    model_folder = Path(model_folder)
    if not model_folder.is_dir():
        raise RunError(f"{model_folder} does not exist: train it first (nnUNetv2_train), or check -d/-tr/-p/-c")
    out = []
    for fold in folds:
        path = model_folder / f"fold_{fold}"
        if not path.is_dir():
            have = ", ".join(sorted(p.name[len("fold_"):] for p in model_folder.glob("fold_*"))) or "none"
            raise RunError(f"{model_folder.name} has no fold {fold} (trained folds: {have}): pick them with -f")
        out.append(TrainedFold.open(path))
    return out


# --- what a checkpoint holds ----------------------------------------------------------------------
def unique_parameters(weights: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The parameters of a state dict, each once under its first name, in state-dict order (the order of
    ``network.parameters()``, so of the optimizer's state): a state dict names some tensors twice (``conv``
    and ``all_modules.0``; ``decoder.encoder.*``); buffers are left out."""
    seen, out = set(), {}
    for k, w in weights.items():
        if not torch.is_tensor(w) or "running_" in k or "num_batches" in k:
            continue
        if w.data_ptr() not in seen:
            seen.add(w.data_ptr())
            out[k] = w
    return out


def checkpoint_parameters(checkpoint: dict) -> int:
    """Parameters of the trained network, each tensor counted once, no buffers."""
    return sum(w.numel() for w in unique_parameters(checkpoint["network_weights"]).values())


def conv_widths(weights: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """Output channels of every conv in a state dict (each conv once: not its ``all_modules`` alias,
    not the decoder's reference to the encoder)."""
    return {k[:-len(".weight")]: int(w.shape[0]) for k, w in weights.items()
            if k.endswith("conv.weight") and ".all_modules." not in k and not k.startswith("decoder.encoder.")}


def epoch_seconds(checkpoint: dict) -> List[float]:
    """Duration of every epoch, from nnU-Net's own logging in the checkpoint."""
    log = checkpoint["logging"]
    return [e - s for s, e in zip(log["epoch_start_timestamps"], log["epoch_end_timestamps"])]


def median_epoch_seconds(checkpoint: dict) -> float:
    return statistics.median(epoch_seconds(checkpoint))


def first_learning_epoch(checkpoint: dict, threshold: float = 0.05) -> Optional[int]:
    """First epoch whose validation pseudo-Dice (mean over foreground classes) exceeds ``threshold``:
    when the network stopped predicting background everywhere. None: it never did."""
    return next((i for i, d in enumerate(checkpoint["logging"]["mean_fg_dice"]) if d > threshold), None)


# --- an evaluated prediction folder --------------------------------------------------------------
def summary_dice(summary_json: Union[str, Path]) -> Tuple[float, Dict[str, float]]:
    """Foreground-mean test Dice and the Dice of each label (or region, in its order) of an
    nnUNetv2_evaluate_folder summary.json, read once."""
    with open(summary_json) as f:
        summary = json.load(f)
    return summary["foreground_mean"]["Dice"], {label: m["Dice"] for label, m in summary["mean"].items()}


def foreground_dice(summary_json: Union[str, Path]) -> float:
    return summary_dice(summary_json)[0]


def summary_dice_per_case(summary_json: Union[str, Path]) -> Dict[str, List[Optional[float]]]:
    """{label: [Dice of each case, cases in reference-file order; None where the label is in neither the
    reference nor the prediction (nnU-Net writes NaN)]} of an nnUNetv2_evaluate_folder summary.json."""
    with open(summary_json) as f:
        cases = sorted(json.load(f)["metric_per_case"], key=lambda c: c["reference_file"])
    return {label: [None if math.isnan(c["metrics"][label]["Dice"]) else c["metrics"][label]["Dice"]
                    for c in cases] for label in (cases[0]["metrics"] if cases else {})}
