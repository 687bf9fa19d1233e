"""Trainers for scripts/bench_prune_overhead.py (found through nnUNet_extTrainer)."""
from nnunet_lean.pruning.trainer import nnUNetTrainerSTAMP
from nnunet_lean.training import ScheduleOverrides


class nnUNetTrainerSTAMPOverheadBench(ScheduleOverrides, nnUNetTrainerSTAMP):
    """nnU-Net's own epoch (250 training + 50 validation iterations) and STAMP's defaults for a
    pruning step (10 ranking batches, 8 channels), 3 epochs, one pruning step after epoch 1."""
    schedule = {"num_epochs": 3, "prune_start_epoch": 1, "prune_every": 1, "prune_stop_epoch": 2}
