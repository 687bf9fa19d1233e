"""nnunet-lean trainers, installed as nnunetv2.training.nnUNetTrainer.variants.lean so that the
stock ``nnUNetv2_train -tr`` and ``nnUNetv2_predict -tr`` find them (see setup.py)."""
