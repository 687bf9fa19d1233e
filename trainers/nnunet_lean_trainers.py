"""Re-exports nnunet-lean's trainers where nnU-Net's trainer lookup searches.

Installed (non-editable) as ``nnunetv2.training.nnUNetTrainer.variants.lean.nnunet_lean_trainers``;
for an editable install point ``nnUNet_extTrainer`` at this folder instead.
"""
from nnunet_lean.training import (  # noqa: F401
    nnUNetTrainerWidths, nnUNetTrainerLean, nnUNetTrainerLean_Nf4, nnUNetTrainerLean_Nf8,
    nnUNetTrainerLean_Nf16, nnUNetTrainerLean_Nf64, nnUNetTrainerScaled75, nnUNetTrainerScaled50,
    nnUNetTrainerScaled25, nnUNetTrainerQuick, nnUNetTrainerLeanQuick, nnUNetTrainerVanillaAdamQuick,
    nnUNetTrainerLeanSGD, nnUNetTrainerLean_Nf4SGD, nnUNetTrainerLean_Nf8SGD, nnUNetTrainerLean_Nf16SGD,
    nnUNetTrainerLean_Nf64SGD, nnUNetTrainerScaled75SGD, nnUNetTrainerScaled50SGD, nnUNetTrainerScaled25SGD,
    nnUNetTrainerLeanNoMirroring, nnUNetTrainerLeanNoMirroringSGD)
from nnunet_lean.pruning.trainer import (  # noqa: F401
    nnUNetTrainerSTAMP, nnUNetTrainerPruneRandomInSTAMPBlock, nnUNetTrainerPruneRandomWidest,
    nnUNetTrainerSTAMPQuick, nnUNetTrainerPruneRandomInSTAMPBlockQuick, nnUNetTrainerPruneRandomWidestQuick,
    nnUNetTrainerSTAMPActivation, nnUNetTrainerSTAMPActivationQuick,
    nnUNetTrainerSTAMPSGD, nnUNetTrainerSTAMPActivationSGD, nnUNetTrainerPruneRandomInSTAMPBlockSGD,
    nnUNetTrainerPruneRandomWidestSGD)
