"""The lean training recipe: one place that says how our trainers of small networks optimise.

Measured in docs/learning.md: under nnU-Net's SGD (lr 1e-2, Nesterov momentum 0.99, poly) a narrow
network's outputs all collapse to background in the first epoch and each leaves it at a pace set by its
own narrow block's gradient, so the full-resolution output of a small network often never does within
the budget. nnU-Net's own ``nnUNetTrainerVanillaAdam`` optimizer (Adam, lr 1e-2, weight decay 3e-5,
the same poly schedule) learned every output from the first epochs. That optimizer is the lean recipe;
users who train lean plans with nnU-Net's trainers get it with ``-tr nnUNetTrainerVanillaAdam``.

A run started under one recipe is never resumed (``--c``) under another: :class:`RecipeGuard` compares
the checkpoint's optimizer with the one the trainer builds and refuses, naming the trainer that has
the checkpoint's recipe.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerVanillaAdam

from nnunet_lean import runs
from nnunet_lean.precision import FlushDenormals

SGD_SUFFIX = "SGD"   # nnUNetTrainerLean (lean recipe) <-> nnUNetTrainerLeanSGD (nnU-Net's recipe)


def optimizer_recipe(optimizer_state: dict) -> str:
    """'Adam, lr 0.01' / 'SGD, lr 0.01' from an optimizer's state dict (its first parameter group)."""
    group = optimizer_state["param_groups"][0]
    if "momentum" in group:
        name = "SGD"
    elif "betas" in group:
        name = "AdamW" if group.get("decoupled_weight_decay") else "Adam"
    else:
        name = "an unknown optimizer"
    return f"{name}, lr {group.get('initial_lr', group['lr']):g}"


def twin_name(trainer_name: str) -> str:
    """The same trainer with the other recipe: X <-> X + 'SGD'."""
    if trainer_name.endswith(SGD_SUFFIX):
        return trainer_name[:-len(SGD_SUFFIX)]
    return trainer_name + SGD_SUFFIX


def twin_exists(trainer_class: type) -> bool:
    """Whether the other-recipe twin is defined next to the trainer or among ours."""
    name = twin_name(trainer_class.__name__)
    modules = {trainer_class.__module__, "nnunet_lean.training", "nnunet_lean.pruning.trainer"}
    return any(hasattr(sys.modules.get(m), name) for m in modules)


class RecipeGuard(FlushDenormals):
    """Mixin for every trainer of ours: ``--c`` refuses a checkpoint written under another recipe; on a CPU
    denormals are flushed to zero (nnunet_lean.precision)."""

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if not self.was_initialized:
            self.initialize()
        checkpoint = (runs.load_checkpoint(filename_or_checkpoint, mmap=True)
                      if isinstance(filename_or_checkpoint, str) else filename_or_checkpoint)
        problem = recipe_mismatch(self, checkpoint)
        if problem:
            raise RuntimeError(problem)
        super().load_checkpoint(filename_or_checkpoint)


def recipe_mismatch(trainer, checkpoint: dict) -> Optional[str]:
    """None when ``checkpoint`` was written under the recipe ``trainer`` trains with (or its training is
    over: ``--val`` and a finished run load checkpoint_final but train no further), else why not and what
    to run instead."""
    saved = checkpoint.get("optimizer_state")
    if not saved or not saved.get("param_groups") or checkpoint.get("current_epoch", 0) >= trainer.num_epochs:
        return None
    was, now = optimizer_recipe(saved), optimizer_recipe(trainer.optimizer.state_dict())
    if was == now:
        return None
    name = type(trainer).__name__
    head = f"this checkpoint was trained with {was}, but {name} now trains with {now}: "
    if not twin_exists(type(trainer)):
        return head + "start again without --c (no trainer of ours has that recipe under this network)"
    twin = twin_name(name)
    run = os.path.basename(os.path.dirname(os.path.normpath(str(trainer.output_folder))))
    return (head + f"resume it with -tr {twin} after renaming the folder {run} to "
            f"{run.replace(name, twin, 1)}, or start again without --c")


class LeanRecipe(RecipeGuard):
    """Mixin: nnU-Net's ``nnUNetTrainerVanillaAdam`` optimizer and schedule (Adam, initial_lr 1e-2, poly)."""
    configure_optimizers = nnUNetTrainerVanillaAdam.configure_optimizers


class NnunetRecipe(RecipeGuard):
    """Mixin: nnU-Net's own recipe (SGD, Nesterov momentum 0.99, lr 1e-2, poly), kept under ``*SGD`` names.
    Named explicitly so that it wins over a LeanRecipe further up the class hierarchy."""
    configure_optimizers = nnUNetTrainer.configure_optimizers
