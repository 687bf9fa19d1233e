"""Tiny-schedule trainers for the test suite, found through nnUNet_extTrainer=tests/ext_trainers."""
import json
import multiprocessing
import multiprocessing.pool
import os
from unittest import mock

import torch
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerVanillaAdam

from nnunet_lean.pruning.trainer import nnUNetTrainerPruneRandomWidest, nnUNetTrainerSTAMP
from nnunet_lean.training import FinalValidationWithoutMirroring, ScheduleOverrides, nnUNetTrainerLean_Nf16

# 100 steps (4 x 25): the Adam recipes ended at 0.74-0.90 pseudo-Dice here (2026-11-30; the tests assert test
# Dice > 0.5). Shorter epochs would add nnU-Net's per-epoch cost (plot, checkpoint_best) without adding steps.
TINY = {"num_epochs": 4, "num_iterations_per_epoch": 25, "num_val_iterations_per_epoch": 3}


class Seeded:
    """Seeded (random, numpy, torch) before the network is built, so a test's training is the same every time on
    one machine: nnU-Net does not seed, and unseeded the lean network under VanillaAdam once left epoch 0 at
    background and ended at 0.35 test Dice after 150 steps (2026-11-29), where its runs usually reach ~0.9."""
    seed = 0

    def initialize(self):
        import random

        import numpy as np
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        super().initialize()


class ThreadsFromEnv:
    """NNUNET_LEAN_TEST_THREADS=n: this run's torch threads (nnUNetv2_train gives a CPU run every core), for the
    fixtures that train two runs side by side, one core each: on 2 cores two one-thread runs step ~1.2x as fast
    together as one two-thread run after the other, and their startup and validation (one thread) overlap."""

    def initialize(self):
        if os.environ.get("NNUNET_LEAN_TEST_THREADS"):
            torch.set_num_threads(int(os.environ["NNUNET_LEAN_TEST_THREADS"]))
        super().initialize()


class SkipFinalValidation:
    """No final validation: for runs whose tests read what training builds and writes (checkpoint_final, the
    data it unpacks), never the validation folder. It costs ~12 s here, mostly two spawned worker pools starting."""

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation skipped (a test trainer)")


class _ThreadPools:
    """What multiprocessing.get_context returns inside ThreadedFinalValidation: its Pool is a thread pool."""

    @staticmethod
    def Pool(processes=None):
        return multiprocessing.pool.ThreadPool(processes)


class ThreadedFinalValidation:
    """nnU-Net's final validation, unchanged but for its two worker pools (exporting the predictions, then
    compute_metrics_on_folder), which are thread pools here: each spawned pool re-imports nnUNetv2_train before its
    first task, ~10 s a pool on this machine's 2 cores, where the tiny runs' whole validation computes in ~2 s
    (2026-12-01). The spawned path stays covered by stock nnUNetv2_predict -npp 1 -nps 1 (conftest's
    stamp_predicted) and by every run of the product trainers."""

    def perform_actual_validation(self, save_probabilities: bool = False):
        with mock.patch.object(multiprocessing, "get_context", lambda method=None: _ThreadPools):
            super().perform_actual_validation(save_probabilities)


class TinySchedule(Seeded, ThreadsFromEnv, ThreadedFinalValidation, FinalValidationWithoutMirroring,
                   ScheduleOverrides):
    """The final validation runs without mirroring: the tests read what it writes, its Dice is not the result."""
    schedule = TINY


class nnUNetTrainerTiny(SkipFinalValidation, TinySchedule, nnUNetTrainerVanillaAdam):
    """The plans' network with nnU-Net's own VanillaAdam: what README tells users of lean plans to add
    (the lean recipe, nnunet_lean.recipe). Under nnU-Net's SGD a narrow network's full-resolution output
    can stay all background for hundreds of steps (docs/learning.md). No test reads its final validation
    (nnUNetTrainerLeanTiny's runs that code)."""


class nnUNetTrainerLeanTiny(TinySchedule, nnUNetTrainerLean_Nf16):
    """The lean trainer at Nf=16 (nnUNetTrainerLean with the width as its only change): on dataset 501 an epoch took
    9.5 s against Nf=32's 19 s, at validation Dice 0.84 against 0.71 after the 100 steps (2026-12-01)."""


class nnUNetTrainerShort(SkipFinalValidation, ScheduleOverrides, nnUNetTrainerVanillaAdam):
    """The plans' network, 2 epochs x 5 steps: for tests of what a run builds and writes, not of what it learns."""
    schedule = {"num_epochs": 2, "num_iterations_per_epoch": 5, "num_val_iterations_per_epoch": 1}


class TinyPruning(Seeded, ThreadsFromEnv, ThreadedFinalValidation, FinalValidationWithoutMirroring,
                  ScheduleOverrides):
    """4 epochs x 25 iterations; prune 6 channels at the start of epochs 1 and 2."""
    schedule = dict(TINY, prune_start_epoch=1, prune_every=1, prune_stop_epoch=3,
                    prune_channels_per_step=6, importance_batches=2)


class ShortPruning(TinyPruning):
    """3 epochs x 5 iterations, the same two pruning steps: for what a pruning run builds, not what it learns."""
    schedule = dict(TinyPruning.schedule, num_epochs=3, num_iterations_per_epoch=5, num_val_iterations_per_epoch=1)


class RecordBestSaves:
    """Appends to FOLD/best_saves.json, at every checkpoint_best save, the epoch, the unit widths in the
    file just written and the widths of the network validated in that epoch."""

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self._validated_widths = self.raw_network().widths()

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        if os.path.basename(filename) == "checkpoint_best.pth":
            from nnunet_lean.pruning.network import unit_widths_of
            weights = torch.load(filename, map_location="cpu", weights_only=False)["network_weights"]
            path = os.path.join(self.output_folder, "best_saves.json")
            saves = json.load(open(path)) if os.path.isfile(path) else []
            saves.append({"epoch": self.current_epoch, "validated": self._validated_widths,
                          "saved": unit_widths_of(weights, self.raw_network().units.values())})
            with open(path, "w") as f:
                json.dump(saves, f)


class nnUNetTrainerSTAMPTiny(RecordBestSaves, TinyPruning, nnUNetTrainerSTAMP):
    """Fold f prunes 6 + 2f channels per step (fold 'all': 12), so folds end at different widths."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.prune_channels_per_step = 6 + 2 * (fold if isinstance(fold, int) else 3)


class nnUNetTrainerSTAMPShort(SkipFinalValidation, ShortPruning, nnUNetTrainerSTAMP):
    pass


class ResumeSchedule(Seeded, ThreadsFromEnv, ThreadedFinalValidation, FinalValidationWithoutMirroring,
                     ScheduleOverrides):
    """5 short epochs (10 iterations); prune 6 channels at the start of epochs 1 and 3, so the
    checkpoint after epoch 2 holds a used optimizer and one pruning step. 50 steps, seeded: the uninterrupted run is
    the second member of an ensemble test, and at 25 steps on PRUNE_PLANS it ended at validation Dice 0.48 once
    and 0.00 once (2026-12-01)."""
    schedule = {"num_epochs": 5, "num_iterations_per_epoch": 10, "num_val_iterations_per_epoch": 1,
                "prune_start_epoch": 1, "prune_every": 2, "prune_stop_epoch": None,
                "prune_channels_per_step": 6, "importance_batches": 2, "save_every": 1}


class nnUNetTrainerPruneRandomWidestResume(ResumeSchedule, nnUNetTrainerPruneRandomWidest):
    pass


class CrashAndDump:
    """Test hooks driven by env vars: NNUNET_LEAN_TEST_CRASH_AT=E kills the process once E epochs
    are done (checkpoint_latest is written every epoch), =load right after load_checkpoint;
    NNUNET_LEAN_TEST_DUMP=path writes the state restored by load_checkpoint (for `--c`)."""

    def on_epoch_end(self):
        super().on_epoch_end()
        if str(self.current_epoch) == os.environ.get("NNUNET_LEAN_TEST_CRASH_AT"):
            os._exit(3)

    def load_checkpoint(self, filename_or_checkpoint):
        super().load_checkpoint(filename_or_checkpoint)
        dump = os.environ.get("NNUNET_LEAN_TEST_DUMP")
        if dump:
            state = self.optimizer.state_dict()["state"]
            with open(dump, "w") as f:
                json.dump({"epoch": self.current_epoch, "widths": self.raw_network().widths(),
                           "steps": self.pruning_state["steps"], "dropout": self.raw_network().dropout(),
                           "rng": self.pruning_state["rng"],
                           "adam_moments": {str(i): float(s["exp_avg"].double().sum())
                                            for i, s in state.items()}}, f)
        if os.environ.get("NNUNET_LEAN_TEST_CRASH_AT") == "load":
            os._exit(3)


class nnUNetTrainerPruneRandomWidestResumeCrash(SkipFinalValidation, CrashAndDump, ResumeSchedule,
                                                nnUNetTrainerPruneRandomWidest):
    """Adam's moments carried through each step, Dice probed on one validation batch before and after each cut
    (random@widest picks from widths and RNG alone, so it still prunes as the straight run does)."""
    prune_keep_optimizer_state = True
    prune_probe_batches = 1
