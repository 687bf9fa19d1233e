"""nnU-Net's own lookups find our classes after a plain `pip install .`, with no env var."""
import json
import os
import sysconfig

import nnunet_lean

TRAINERS = ["nnUNetTrainerLean", "nnUNetTrainerLean_Nf4", "nnUNetTrainerLean_Nf8", "nnUNetTrainerLean_Nf16",
            "nnUNetTrainerLean_Nf64", "nnUNetTrainerScaled75", "nnUNetTrainerScaled50",
            "nnUNetTrainerScaled25", "nnUNetTrainerQuick", "nnUNetTrainerLeanQuick",
            "nnUNetTrainerVanillaAdamQuick", "nnUNetTrainerLeanSGD", "nnUNetTrainerLean_Nf16SGD",
            "nnUNetTrainerScaled50SGD", "nnUNetTrainerLeanNoMirroring", "nnUNetTrainerLeanNoMirroringSGD"]
PRUNING_TRAINERS = ["nnUNetTrainerSTAMP", "nnUNetTrainerPruneRandomInSTAMPBlock", "nnUNetTrainerPruneRandomWidest",
                    "nnUNetTrainerSTAMPQuick", "nnUNetTrainerPruneRandomInSTAMPBlockQuick",
                    "nnUNetTrainerPruneRandomWidestQuick", "nnUNetTrainerSTAMPSGD", "nnUNetTrainerSTAMPActivationSGD",
                    "nnUNetTrainerPruneRandomInSTAMPBlockSGD", "nnUNetTrainerPruneRandomWidestSGD"]
PLANNERS = ["LeanPlanner", "LeanPlannerNf8", "LeanPlannerNf16", "LeanPlannerNf64", "LeanMemPlanner",
            "LeanResEncMPlanner", "LeanResEncLPlanner", "LeanResEncXLPlanner"]

LOOKUP = """
import json, os
from batchgenerators.utilities.file_and_folder_operations import join
import nnunetv2
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
assert 'nnUNet_extTrainer' not in os.environ
out = {}
for t in %r:
    c = recursive_find_trainer_class_by_name(t)
    out[t] = c.__module__ + '.' + c.__qualname__
for p in %r:  # exactly what nnUNetv2_plan_experiment -pl does
    c = recursive_find_python_class(join(nnunetv2.__path__[0], 'experiment_planning'), p,
                                    current_module='nnunetv2.experiment_planning')
    out[p] = c.__module__ + '.' + c.__qualname__
print('RESULT' + json.dumps(out))
"""


def test_tests_run_against_the_installed_package():
    site = sysconfig.get_paths()["purelib"]
    assert os.path.commonpath([site, nnunet_lean.__file__]) == site, \
        f"nnunet_lean imported from {nnunet_lean.__file__}, not the non-editable install in {site}"


def test_stock_lookups_find_trainers_and_planners_without_env_var(nnunet):
    out = nnunet.python(LOOKUP % (TRAINERS + PRUNING_TRAINERS, PLANNERS)).stdout
    found = json.loads(out.split("RESULT", 1)[1])
    for t in TRAINERS:
        assert found[t] == f"nnunet_lean.training.{t}"
    for t in PRUNING_TRAINERS:
        assert found[t] == f"nnunet_lean.pruning.trainer.{t}"
    for p in PLANNERS:
        assert found[p] == f"nnunet_lean.planning.{p}"



def test_trainers_folder_serves_as_nnUNet_extTrainer_for_editable_installs(nnunet):
    # the exact call nnU-Net makes for each nnUNet_extTrainer folder (find_objects.py)
    folder = os.path.join(os.path.dirname(os.path.dirname(__file__)), "trainers")
    out = nnunet.python(
        "from nnunetv2.utilities.find_class_by_name import recursive_find_python_class\n"
        f"c = recursive_find_python_class({folder!r}, 'nnUNetTrainerLean_Nf8', None, base_folder={folder!r}, "
        "cleanup_imports_from_base_folder=True)\n"
        "print('RESULT' + c.__module__ + '.' + c.__qualname__)").stdout
    assert out.split("RESULT", 1)[1].strip() == "nnunet_lean.training.nnUNetTrainerLean_Nf8"
