"""Trainers for the benchmark and reproduction scripts (found through nnUNet_extTrainer)."""
import math
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import nnUNetTrainerNoMirroring
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerAdam

from nnunet_lean.measure.phases import EpochPhases
from nnunet_lean.precision import CPU_BF16_ENV, autocast_training_forward
from nnunet_lean.pruning.trainer import (nnUNetTrainerPruneRandomInSTAMPBlock, nnUNetTrainerPruneRandomWidest,
                                         nnUNetTrainerSTAMP, nnUNetTrainerSTAMPActivation)
from nnunet_lean.recipe import LeanRecipe, NnunetRecipe
from nnunet_lean.study import wait_while_paused
from nnunet_lean.training import FinalValidationWithoutMirroring, ScheduleOverrides, nnUNetTrainerLean


class nnUNetTrainerSTAMPOverheadBench(ScheduleOverrides, nnUNetTrainerSTAMP):
    """nnU-Net's own epoch (250 training + 50 validation iterations) and STAMP's defaults for a
    pruning step (10 ranking batches, 8 channels), 3 epochs, one pruning step opening epoch 1."""
    schedule = {"num_epochs": 3, "prune_start_epoch": 1, "prune_every": 1, "prune_stop_epoch": 2}


class BudgetSchedule(EpochPhases):
    """The study's fixed budget: NNUNET_LEAN_BUDGET_EPOCHS x NNUNET_LEAN_BUDGET_ITERS
    (scripts/reproduce_lunet.py sets both; defaults 30 x 50). Pruning runs prune every epoch from
    30 % to 85 % of the epochs, as many channels per step as reach 25 % of the channels left.
    A run resumed after an interruption goes on from its last 5-epoch checkpoint.
    NNUNET_LEAN_CPU_BF16=1 (a Study with budget precision bf16 sets it): training steps on a CPU run under
    bf16 autocast (nnunet_lean.precision), pruning runs too (their ranking passes of the "conv" point as well:
    train mode; the norms are taken in fp32).
    NNUNET_LEAN_PAUSE_FILE: while that file exists the run holds before its next epoch begins.
    Each epoch logs where its time went (nnunet_lean.measure.phases: batches waited for, steps)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("NNUNET_LEAN_BUDGET_EPOCHS", "30"))
        self.num_iterations_per_epoch = int(os.environ.get("NNUNET_LEAN_BUDGET_ITERS", "50"))
        self.num_val_iterations_per_epoch = max(1, self.num_iterations_per_epoch // 5)
        self.prune_start_epoch = round(0.3 * self.num_epochs)
        self.prune_stop_epoch = max(self.prune_start_epoch + 1, round(0.85 * self.num_epochs))
        self.prune_every = 1
        self.prune_target_channel_fraction = 0.25
        self.save_every = 5  # checkpoint_latest.pth, from which an interrupted study resumes (--c)

    def initialize(self):
        super().initialize()
        if hasattr(self, "pruning_state"):
            total = sum(self.pruning_state["initial_widths"].values())
            steps = self.prune_stop_epoch - self.prune_start_epoch
            self.prune_channels_per_step = max(1, math.ceil(0.75 * total / steps))
        if os.environ.get(CPU_BF16_ENV) == "1" and self.device.type == "cpu":
            # a pruning run's surgery reshapes its raw network in place (nnU-Net compiles nothing on a CPU), so the
            # wrapper on that module holds across steps (test_bench_trainers)
            autocast_training_forward(self.raw_network() if hasattr(self, "raw_network") else self.network)
            self.print_to_log_file(f"training steps under bf16 autocast on the CPU ({CPU_BF16_ENV}=1)")

    def on_epoch_start(self):
        wait_while_paused(self.print_to_log_file)  # before nnU-Net logs the epoch's start timestamp
        super().on_epoch_start()


class nnUNetTrainerBudget(BudgetSchedule, LeanRecipe, nnUNetTrainer):
    """The plans' network (any width) with the lean recipe."""


class nnUNetTrainerLeanBudget(FinalValidationWithoutMirroring, BudgetSchedule, nnUNetTrainerLean):
    """nnUNetTrainerLean's network and recipe on any plans, the studies' budget; nnU-Net's final validation
    of the fold without mirroring (8x fewer network calls on large cases; prediction mirrors as usual).
    Saves checkpoint_latest every epoch: its epochs can take minutes."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.save_every = 1


class nnUNetTrainerSTAMPBudget(BudgetSchedule, nnUNetTrainerSTAMP):
    pass


class nnUNetTrainerSTAMPActivationBudget(BudgetSchedule, nnUNetTrainerSTAMPActivation):
    pass


class nnUNetTrainerSTAMPMin1Budget(nnUNetTrainerSTAMPBudget):
    """The pruning-collapse control (docs/learning.md): STAMP whose units may go down to 1 channel, as STAMP's
    reference (and our trainers until 2026-12-01) prune."""
    prune_min_channels = 1
    prune_min_channels_full_resolution = None
    prune_min_channels_head_inputs = None
    prune_refit_heads = None


class nnUNetTrainerSTAMPActivationProbeBudget(nnUNetTrainerSTAMPActivationBudget):
    """The collapse probe (docs/learning.md): Dice on 10 validation batches right before and right after every
    cut, in pruning_history.json (a fresh Adam after each step, as in the study), the full-resolution units pruned
    down to the two-channel floor like every other unit (the trainers' setting until the probe's result)."""
    prune_probe_batches = 10
    prune_min_channels_full_resolution = None
    prune_min_channels_head_inputs = None   # (its subclasses too: their runs predate the head floor ...
    prune_refit_heads = None                # ... and the head refit)


class nnUNetTrainerSTAMPActivationKeepAdamBudget(nnUNetTrainerSTAMPActivationProbeBudget):
    """The same with Adam's moments carried through every step (cut like the weights) instead of a fresh Adam."""
    prune_keep_optimizer_state = True


class nnUNetTrainerSTAMPActivationProbeFullRes4Budget(nnUNetTrainerSTAMPActivationProbeBudget):
    """Collapse fix (a), the pruning trainers' default since: the full-resolution units keep at least 4 channels (the
    paper's Nf=4 network: unpruned there), probed."""
    prune_min_channels_full_resolution = 4


class nnUNetTrainerSTAMPActivationRefitBudget(nnUNetTrainerSTAMPActivationProbeFullRes4Budget):
    """The head-refit candidate (docs/learning.md "Why a coarser output dies"): the run whose 1/2 output died without
    the head-input floor (STAMP (activation), full-resolution floor 4, no head floor, probed), with every head whose
    input unit lost channels refitted to the labels after each step (the refit without calibrate_bias, before
    2026-12-01 16:00; "cut" since)."""
    prune_refit_heads = "cut"


class nnUNetTrainerSTAMPActivationRefitAllBudget(nnUNetTrainerSTAMPActivationRefitBudget):
    """The same with every head refitted after every step, whatever the step cut: a cut elsewhere can wipe an
    output too (the run above, step 15: full resolution 0.969 -> 0.048, no head input cut)."""
    prune_refit_heads = "all"


class nnUNetTrainerSTAMPHeads4Budget(nnUNetTrainerSTAMPBudget):
    """The candidate of docs/learning.md (first study run under the full-resolution floor), the pruning trainers' default
    since 2026-12-01 (kept so that its probe command still runs): every unit that feeds a segmentation head keeps 4
    channels too, so that no deep-supervision output is cut from under its head (its run predates the head refit)."""
    prune_min_channels_head_inputs = 4
    prune_refit_heads = None


class nnUNetTrainerPruneRandomInSTAMPBlockBudget(BudgetSchedule, nnUNetTrainerPruneRandomInSTAMPBlock):
    pass


class nnUNetTrainerPruneRandomWidestBudget(BudgetSchedule, nnUNetTrainerPruneRandomWidest):
    pass


# the same under nnU-Net's own recipe (SGD): the studies' figures before the lean recipe
class nnUNetTrainerBudgetSGD(NnunetRecipe, nnUNetTrainerBudget):
    pass


class nnUNetTrainerBudgetAdamW(nnUNetTrainerBudget):
    """The plans' network with nnU-Net's own ``nnUNetTrainerAdam`` optimizer (AdamW, amsgrad, lr 1e-2, poly).
    Its weight decay is decoupled from the gradient, so a stage the task does not use is not driven towards zero
    as under the lean recipe's coupled L2 (docs/learning.md, dead stages): the control for whether they cost Dice."""
    configure_optimizers = nnUNetTrainerAdam.configure_optimizers


class nnUNetTrainerBudgetNoMirroring(nnUNetTrainerBudget, nnUNetTrainerNoMirroring):
    """The lean recipe without mirroring in training or validation (nnU-Net's own ``nnUNetTrainerNoMirroring``),
    so that position tells a left label from a right one: the control for airway's left / right bronchus swaps
    (docs/learning.md, more held-out cases)."""


class nnUNetTrainerSTAMPBudgetSGD(NnunetRecipe, nnUNetTrainerSTAMPBudget):
    pass


class nnUNetTrainerSTAMPActivationBudgetSGD(NnunetRecipe, nnUNetTrainerSTAMPActivationBudget):
    pass


class nnUNetTrainerPruneRandomInSTAMPBlockBudgetSGD(NnunetRecipe, nnUNetTrainerPruneRandomInSTAMPBlockBudget):
    pass


class nnUNetTrainerPruneRandomWidestBudgetSGD(NnunetRecipe, nnUNetTrainerPruneRandomWidestBudget):
    pass


class CheckSchedule:
    """scripts/gpu_check.sh: NNUNET_LEAN_CHECK_EPOCHS x NNUNET_LEAN_CHECK_ITERS (default 6 x 10); a pruning
    trainer removes 8 channels at the start of epochs 1, 2 and 3. NNUNET_LEAN_CHECK_INTERRUPT=E ends
    the process after epoch E as a kill would (exit code 3), to be resumed with --c."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("NNUNET_LEAN_CHECK_EPOCHS", "6"))
        self.num_iterations_per_epoch = int(os.environ.get("NNUNET_LEAN_CHECK_ITERS", "10"))
        self.num_val_iterations_per_epoch = 2
        self.prune_start_epoch, self.prune_every, self.prune_stop_epoch = 1, 1, 4
        self.prune_channels_per_step, self.importance_batches, self.save_every = 8, 2, 1

    def on_epoch_end(self):
        super().on_epoch_end()
        if os.environ.get("NNUNET_LEAN_CHECK_INTERRUPT") == str(self.current_epoch):
            os._exit(3)


class nnUNetTrainerCheck(CheckSchedule, nnUNetTrainer):
    pass


class nnUNetTrainerLeanCheck(CheckSchedule, nnUNetTrainerLean):
    pass


class nnUNetTrainerSTAMPCheck(CheckSchedule, nnUNetTrainerSTAMP):
    pass
