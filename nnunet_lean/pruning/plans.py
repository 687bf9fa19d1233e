"""Plans of a finished pruning run's widths, freshly initialised: the paper's "equivalent-sized pruned
network retrained from random initialisation", trained by the stock trainer."""
from __future__ import annotations

import copy
from typing import Tuple

import torch

from nnunet_lean import architecture, runs
from nnunet_lean.jsonio import write_json_atomically
from nnunet_lean.plans_modifier import open_plans
from nnunet_lean.pruning.network import unit_widths_of
from nnunet_lean.pruning.trainer import prunable_architecture


def pruned_plans(dataset: str, fold_dir: str, target: str, overwrite: bool = False) -> Tuple[str, int]:
    """Write plans ``target`` whose network has the widths of the run's checkpoint_final; source plans
    and configuration are the run's own. Returns (path, channels in its conv units)."""
    run = runs.TrainedFold.open(fold_dir)
    weights = run.weights("checkpoint_final.pth")
    plans, _, _, dst_path = open_plans(dataset, run.plans, target, [run.configuration], overwrite)
    config = run.configuration
    arch = prunable_architecture(plans["configurations"][config]["architecture"])
    with torch.device("meta"):
        net = architecture.build(arch, 1, 1, allow_init=False)
    unit_widths = unit_widths_of(weights, net.units.values())
    arch["arch_kwargs"] = dict(arch["arch_kwargs"], unit_widths=unit_widths)
    new = copy.deepcopy(plans)
    new["plans_name"] = target
    new["configurations"] = {config: dict(plans["configurations"][config], architecture=arch)}
    write_json_atomically(new, dst_path)
    return dst_path, sum(unit_widths.values())
