"""Derive a new plans file from an existing one with other network widths.

The new plans keep every configuration's data identifier, so nnU-Net reuses the preprocessed data
of the source plans: only the network changes, nothing that decides the preprocessed arrays
(see :func:`nnunet_lean.planning.preprocessing_signature`). Plans of a pruned run's widths:
:mod:`nnunet_lean.pruning.plans`.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from nnunet_lean import architecture
from nnunet_lean.errors import LeanError
from nnunet_lean.jsonio import write_json_atomically
from nnunet_lean.widths import WidthChoice, WidthError


_NOT_PLANS = ("dataset.json", "dataset_fingerprint.json", "splits_final.json")


class PlansError(LeanError, ValueError):
    """Bad request for a plans file; the message names the fix."""


@dataclass
class ConfigChange:
    configuration: str
    widths_before: List[int]
    widths_after: List[int]
    params_before: int
    params_after: int


def default_target_name(source: str, choice: WidthChoice) -> str:
    if choice.nf is not None:
        return f"{source}_LeanNf{choice.nf}"
    if choice.scale is not None:
        return f"{source}_Scaled{round(choice.scale * 100)}"
    if choice.base is not None:
        return f"{source}_Base{choice.base}"
    return f"{source}_LeanBudget{choice.budget}"


def dataset_folder(dataset: str) -> str:
    """Preprocessed folder of a dataset given by id or name."""
    from nnunetv2.paths import nnUNet_preprocessed
    if nnUNet_preprocessed is None:
        raise PlansError("nnUNet_preprocessed is not set: export nnUNet_preprocessed=/path/to/it")
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    try:
        name = maybe_convert_to_dataset_name(int(dataset) if dataset.isdigit() else dataset)
    except RuntimeError:
        raise PlansError(f"unknown dataset {dataset!r}: check -d and nnUNet_raw/nnUNet_preprocessed") from None
    folder = os.path.join(nnUNet_preprocessed, name)
    if not os.path.isdir(folder):
        raise PlansError(f"dataset {name} is not preprocessed: run nnUNetv2_plan_and_preprocess -d {dataset}")
    return folder


def _load_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def load_plans(dataset: str, name: str) -> Tuple[str, dict, dict]:
    """(preprocessed folder, plans ``name``, dataset.json) of a dataset given by id or name."""
    folder = dataset_folder(dataset)
    path = os.path.join(folder, name + ".json")
    if not os.path.isfile(path):
        have = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json") and f not in _NOT_PLANS)
        raise PlansError(f"no plans {name!r} in {folder} (found: {', '.join(have) or 'none'}): "
                         f"check -p or run nnUNetv2_plan_experiment")
    return folder, _load_json(path), _load_json(os.path.join(folder, "dataset.json"))


def open_plans(dataset: str, source: str, target: str, configurations: Optional[Sequence[str]],
                overwrite: bool) -> Tuple[dict, dict, List[str], str]:
    """Validate a derivation request; returns (source plans, dataset.json, configurations, target path)."""
    if "__" in target:
        raise PlansError(f"plans name {target!r} contains '__', which nnU-Net uses as a separator: rename it")
    if not target or os.sep in target or target != target.strip():
        raise PlansError(f"plans name {target!r} is not a plain file name: rename it")
    if target == source:
        raise PlansError("the target plans name equals the source: give another -o")
    folder, plans, dataset_json = load_plans(dataset, source)
    dst_path = os.path.join(folder, target + ".json")
    if os.path.exists(dst_path) and not overwrite:
        raise PlansError(f"{dst_path} exists: pass --overwrite or choose another -o")

    own = [c for c, v in plans["configurations"].items() if "architecture" in v]
    chosen = list(configurations) if configurations else own
    for c in chosen:
        if c not in plans["configurations"]:
            raise PlansError(f"configuration {c!r} not in {source} (has: {', '.join(plans['configurations'])})")
        if c not in own:
            parent = plans["configurations"][c].get("inherits_from")
            raise PlansError(f"configuration {c!r} inherits its network from {parent!r}: modify {parent!r}")
    return plans, dataset_json, chosen, dst_path


def modify_plans(dataset: str, source: str, choice: WidthChoice, target: Optional[str] = None,
                 configurations: Optional[Sequence[str]] = None, overwrite: bool = False,
                 dry_run: bool = False) -> tuple:
    """Write plans ``target`` = ``source`` with ``choice`` applied; returns (path, changes)."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    target = target or default_target_name(source, choice)
    plans, dataset_json, chosen, dst_path = open_plans(dataset, source, target, configurations, overwrite)
    pm = PlansManager(plans)
    num_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    new = copy.deepcopy(plans)
    new["plans_name"] = target
    changes = []
    for c in chosen:
        num_in = determine_num_input_channels(pm, pm.get_configuration(c), dataset_json)
        arch = plans["configurations"][c]["architecture"]
        try:
            new_arch = architecture.apply_choice(arch, choice, num_in, num_out)
        except WidthError as e:
            raise PlansError(f"{c}: {e}") from None
        new["configurations"][c]["architecture"] = new_arch
        changes.append(ConfigChange(c, architecture.plan_widths(arch), architecture.plan_widths(new_arch),
                                    architecture.count_parameters(arch, num_in, num_out),
                                    architecture.count_parameters(new_arch, num_in, num_out)))
    if not dry_run:
        write_json_atomically(new, dst_path)
    return dst_path, changes


def format_changes(changes: Sequence[ConfigChange]) -> str:
    rows = ["| configuration | widths before | widths after | params before | params after | after/before |",
            "|---|---|---|---:|---:|---:|"]
    for ch in changes:
        rows.append(f"| {ch.configuration} | {ch.widths_before} | {ch.widths_after} | "
                    f"{ch.params_before:,} | {ch.params_after:,} | "
                    f"{ch.params_after / ch.params_before:.4f} |")
    return "\n".join(rows)
