"""Tiny-schedule trainers for the test suite, found through nnUNet_extTrainer=tests/ext_trainers."""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

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
