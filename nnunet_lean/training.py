"""nnU-Net trainers that change the network's widths without re-planning.

Each trainer applies a :class:`~nnunet_lean.widths.WidthChoice` to the widths of whatever
topology the plans hold (PlainConvUNet or ResidualEncoderUNet). ``build_network_architecture``
is what nnU-Net's predictor calls too, so ``nnUNetv2_predict -tr ...`` rebuilds the same net.
"""
from __future__ import annotations

import torch
from torch import nn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import \
    nnUNetTrainerNoMirroring
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerVanillaAdam
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_lean import architecture
from nnunet_lean.recipe import LeanRecipe, NnunetRecipe
from nnunet_lean.widths import WidthChoice


class nnUNetTrainerWidths(nnUNetTrainer):
    """Base class: the plan's network with ``width_choice`` applied (default: unchanged)."""

    width_choice: WidthChoice = WidthChoice()

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager,
                                   configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        arch = architecture.apply_choice(architecture.from_configuration(configuration_manager),
                                         cls.width_choice, num_input_channels, num_output_channels)
        return architecture.build(arch, num_input_channels, num_output_channels,
                                  deep_supervision=enable_deep_supervision)


class nnUNetTrainerLean(LeanRecipe, nnUNetTrainerWidths):
    """LUnet: every stage gets the plan's first-stage width (32 in stock plans); the lean recipe."""
    width_choice = WidthChoice.plan_base_lean()


class nnUNetTrainerLean_Nf4(nnUNetTrainerLean):
    width_choice = WidthChoice(nf=4)


class nnUNetTrainerLean_Nf8(nnUNetTrainerLean):
    width_choice = WidthChoice(nf=8)


class nnUNetTrainerLean_Nf16(nnUNetTrainerLean):
    width_choice = WidthChoice(nf=16)


class nnUNetTrainerLean_Nf64(nnUNetTrainerLean):
    width_choice = WidthChoice(nf=64)


class nnUNetTrainerLeanNoMirroring(nnUNetTrainerLean, nnUNetTrainerNoMirroring):
    """LUnet and the lean recipe without mirroring in training, validation and prediction (nnU-Net's own
    ``nnUNetTrainerNoMirroring``): for labels that differ by side (left / right), which mirroring makes
    position unable to tell apart. On lean plans the network is the plans' own."""


class nnUNetTrainerScaled75(LeanRecipe, nnUNetTrainerWidths):
    """The paper's linearly scaled-down U-Net: every stage at 75 % of the plan's width; the lean recipe."""
    width_choice = WidthChoice(scale=0.75)


class nnUNetTrainerScaled50(nnUNetTrainerScaled75):
    width_choice = WidthChoice(scale=0.5)


class nnUNetTrainerScaled25(nnUNetTrainerScaled75):
    width_choice = WidthChoice(scale=0.25)


# the same networks under nnU-Net's own recipe (SGD), as before the lean recipe existed
class nnUNetTrainerLeanSGD(NnunetRecipe, nnUNetTrainerLean):
    pass


class nnUNetTrainerLean_Nf4SGD(NnunetRecipe, nnUNetTrainerLean_Nf4):
    pass


class nnUNetTrainerLean_Nf8SGD(NnunetRecipe, nnUNetTrainerLean_Nf8):
    pass


class nnUNetTrainerLean_Nf16SGD(NnunetRecipe, nnUNetTrainerLean_Nf16):
    pass


class nnUNetTrainerLean_Nf64SGD(NnunetRecipe, nnUNetTrainerLean_Nf64):
    pass


class nnUNetTrainerLeanNoMirroringSGD(NnunetRecipe, nnUNetTrainerLeanNoMirroring):
    pass


class nnUNetTrainerScaled75SGD(NnunetRecipe, nnUNetTrainerScaled75):
    pass


class nnUNetTrainerScaled50SGD(NnunetRecipe, nnUNetTrainerScaled50):
    pass


class nnUNetTrainerScaled25SGD(NnunetRecipe, nnUNetTrainerScaled25):
    pass


class ScheduleOverrides:
    """Mixin: after nnUNetTrainer.__init__, set the attributes named in ``schedule``.

    The ``__init__`` signature must stay nnU-Net's own: nnUNetTrainer records its init
    arguments by reading its locals under the names of ``self.__init__``'s parameters.
    """
    schedule: dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for name, value in self.schedule.items():
            setattr(self, name, value)


class FinalValidationWithoutMirroring:
    """Mixin: nnU-Net's final validation of the fold runs without mirroring (8x fewer network calls with
    3 mirror axes). The checkpoints keep the mirroring axes (checkpoint_final is written before the final
    validation), so nnUNetv2_predict mirrors as usual. For short runs whose validation is not the result."""

    def perform_actual_validation(self, save_probabilities: bool = False):
        axes, self.inference_allowed_mirroring_axes = self.inference_allowed_mirroring_axes, None
        try:
            super().perform_actual_validation(save_probabilities)
        finally:
            self.inference_allowed_mirroring_axes = axes


class QuickSchedule(ScheduleOverrides):
    """A CPU-sized schedule (a few short epochs) for demos and smoke runs."""
    schedule = {"num_epochs": 12, "num_iterations_per_epoch": 20, "num_val_iterations_per_epoch": 5}


class nnUNetTrainerQuick(QuickSchedule, nnUNetTrainer):
    """Stock network, quick schedule (the demo's baseline)."""


class nnUNetTrainerVanillaAdamQuick(QuickSchedule, nnUNetTrainerVanillaAdam):
    """The plans' network with the lean recipe (nnU-Net's own VanillaAdam), quick schedule: the demo
    trains both plans with it, so both rows use one recipe."""


class nnUNetTrainerLeanQuick(QuickSchedule, nnUNetTrainerLean):
    """LUnet, quick schedule, the lean recipe."""
