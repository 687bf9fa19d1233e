"""The lean recipe: one definition used by every trainer of ours that trains a small network; nnU-Net's
recipe kept under the *SGD twins; ``--c`` never resumes a run under another recipe."""
import pytest
import torch

from nnunet_lean import recipe, training
from nnunet_lean.pruning import trainer as pruning

LEAN = [training.nnUNetTrainerLean, training.nnUNetTrainerLean_Nf4, training.nnUNetTrainerLean_Nf8,
        training.nnUNetTrainerLean_Nf16, training.nnUNetTrainerLean_Nf64, training.nnUNetTrainerScaled75,
        training.nnUNetTrainerScaled50, training.nnUNetTrainerScaled25, training.nnUNetTrainerLeanQuick,
        training.nnUNetTrainerLeanNoMirroring,
        pruning.nnUNetTrainerSTAMP, pruning.nnUNetTrainerSTAMPActivation,
        pruning.nnUNetTrainerPruneRandomInSTAMPBlock, pruning.nnUNetTrainerPruneRandomWidest,
        pruning.nnUNetTrainerSTAMPQuick, pruning.nnUNetTrainerPruneRandomWidestQuick]


class _Host:
    """What configure_optimizers reads of a trainer."""
    initial_lr, weight_decay, num_epochs = 1e-2, 3e-5, 10

    def __init__(self):
        self.network = torch.nn.Conv3d(1, 2, 3)


def optimizer_of(cls) -> torch.optim.Optimizer:
    return cls.configure_optimizers(_Host())[0]


@pytest.mark.parametrize("cls", LEAN, ids=lambda c: c.__name__)
def test_small_network_trainers_use_the_lean_recipe_and_keep_an_sgd_twin(cls):
    opt = optimizer_of(cls)
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["initial_lr"] == 1e-2
    assert issubclass(cls, recipe.LeanRecipe)
    if "Quick" not in cls.__name__:
        twin = getattr(training, cls.__name__ + "SGD", None) or getattr(pruning, cls.__name__ + "SGD")
        sgd = optimizer_of(twin)
        assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.99
        assert issubclass(twin, cls) and twin.__mro__[1] is recipe.NnunetRecipe  # same network, other recipe


def test_recipe_is_read_from_an_optimizer_state():
    host = _Host()
    adam = training.nnUNetTrainerLean.configure_optimizers(host)[0]
    sgd = training.nnUNetTrainerLeanSGD.configure_optimizers(host)[0]
    assert recipe.optimizer_recipe(adam.state_dict()) == "Adam, lr 0.01"
    assert recipe.optimizer_recipe(sgd.state_dict()) == "SGD, lr 0.01"
    assert recipe.twin_name("nnUNetTrainerLean_Nf16") == "nnUNetTrainerLean_Nf16SGD"
    assert recipe.twin_name("nnUNetTrainerLean_Nf16SGD") == "nnUNetTrainerLean_Nf16"


def test_a_finished_run_is_never_refused():
    """--val and --c of a finished run load checkpoint_final but train no further: any recipe will do."""
    host = _Host()
    host.optimizer = training.nnUNetTrainerLean.configure_optimizers(host)[0]
    sgd = training.nnUNetTrainerLeanSGD.configure_optimizers(host)[0].state_dict()
    assert recipe.recipe_mismatch(_Named(host), {"optimizer_state": sgd, "current_epoch": 9}).startswith(
        "this checkpoint was trained with SGD, lr 0.01, but _Named now trains with Adam, lr 0.01")
    assert recipe.recipe_mismatch(_Named(host), {"optimizer_state": sgd, "current_epoch": 10}) is None


class _Named(training.nnUNetTrainerLean):
    """nnUNetTrainerLean's recipe without nnU-Net's __init__."""

    def __init__(self, host):
        self.optimizer, self.num_epochs, self.output_folder = host.optimizer, host.num_epochs, "/r/X__P__C/fold_0"
