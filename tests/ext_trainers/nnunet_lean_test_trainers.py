"""Tiny-schedule trainers for the test suite, found through nnUNet_extTrainer=tests/ext_trainers."""
import json
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lean.pruning.trainer import nnUNetTrainerPruneRandomWidest, nnUNetTrainerSTAMP
from nnunet_lean.training import nnUNetTrainerLean, nnUNetTrainerLean_Nf8, nnUNetTrainerScaled25


class TinySchedule:
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 4
        self.num_iterations_per_epoch = 25
        self.num_val_iterations_per_epoch = 3


class nnUNetTrainerTiny(TinySchedule, nnUNetTrainer):
    pass


class nnUNetTrainerLeanTiny(TinySchedule, nnUNetTrainerLean):
    pass


class nnUNetTrainerLeanNf8Tiny(TinySchedule, nnUNetTrainerLean_Nf8):
    pass


class nnUNetTrainerScaled25Tiny(TinySchedule, nnUNetTrainerScaled25):
    pass


class TinyPruning:
    """4 epochs x 25 iterations; prune 6 channels after epochs 1 and 2."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 4
        self.num_iterations_per_epoch = 25
        self.num_val_iterations_per_epoch = 3
        self.prune_start_epoch = 1
        self.prune_every = 1
        self.prune_stop_epoch = None
        self.prune_channels_per_step = 6
        self.importance_batches = 2


class nnUNetTrainerSTAMPTiny(TinyPruning, nnUNetTrainerSTAMP):
    pass


class ResumeSchedule:
    """6 short epochs (10 iterations); prune 6 channels after epochs 1 and 3, so the checkpoint
    after epoch 2 holds a used optimizer and one pruning step."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 6
        self.num_iterations_per_epoch = 10
        self.num_val_iterations_per_epoch = 2
        self.prune_start_epoch = 1
        self.prune_every = 2
        self.prune_stop_epoch = None
        self.prune_channels_per_step = 6
        self.importance_batches = 2


class nnUNetTrainerPruneRandomWidestResume(ResumeSchedule, nnUNetTrainerPruneRandomWidest):
    pass


class CrashAndDump:
    """Test hooks driven by env vars: NNUNET_LEAN_TEST_CRASH_AT=E kills the process once E epochs
    are done (checkpoint_latest written every epoch); NNUNET_LEAN_TEST_DUMP=path writes the state
    restored by load_checkpoint (for `--c`)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.save_every = 1

    def on_epoch_end(self):
        super().on_epoch_end()
        if str(self.current_epoch) == os.environ.get("NNUNET_LEAN_TEST_CRASH_AT"):
            os._exit(3)

    def load_checkpoint(self, filename_or_checkpoint):
        super().load_checkpoint(filename_or_checkpoint)
        dump = os.environ.get("NNUNET_LEAN_TEST_DUMP")
        if dump:
            params = list(self.network.parameters())
            state = self.optimizer.state_dict()["state"]
            with open(dump, "w") as f:
                json.dump({"epoch": self.current_epoch, "widths": self.raw_network().widths(),
                           "steps": self.pruning_state["steps"], "dropout": self.raw_network().dropout(),
                           "rng": self.pruning_state["rng"],
                           "momentum": {str(i): float(s["momentum_buffer"].double().sum()) for i, s in state.items()},
                           "param_shapes": [list(p.shape) for p in params]}, f)


class nnUNetTrainerPruneRandomWidestResumeCrash(CrashAndDump, ResumeSchedule, nnUNetTrainerPruneRandomWidest):
    pass
