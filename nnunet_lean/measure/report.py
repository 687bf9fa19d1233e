"""`nnunet_lean report`: the plan's default network against lean / scaled / pruned variants,
measured in one process (see :mod:`nnunet_lean.measure.networks`), as a markdown table and a JSON file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from nnunet_lean import runs
from nnunet_lean.measure import networks as measure
from nnunet_lean.plans_modifier import PlansError, load_plans


def _loss(configuration_manager, label_manager):
    """nnU-Net's default loss: Dice + CE on every deep-supervision output, weights halving."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    if label_manager.has_regions:
        raise PlansError("region-based plans are not supported by the report: use a label-based dataset")
    n = len(configuration_manager.pool_op_kernel_sizes) - 1
    weights = np.array([1 / 2 ** i for i in range(n)])
    weights[-1] = 0
    base = DC_and_CE_loss({"batch_dice": configuration_manager.batch_dice, "smooth": 1e-5, "do_bg": False,
                           "ddp": False}, {}, weight_ce=1, weight_dice=1, ignore_label=label_manager.ignore_label,
                          dice_class=MemoryEfficientSoftDiceLoss)
    return DeepSupervisionWrapper(base, weights / weights.sum())


def candidates(trainers: Sequence[str], pruned_folds: Sequence[str], plans: str,
               configuration: str) -> List[Tuple[str, type, Optional[dict]]]:
    """(label, trainer class, weights or None) per network measured; a pruned fold must come from the measured
    plans and configuration (its weights fit no other network)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    def find(name: str) -> type:
        try:
            return recursive_find_trainer_class_by_name(name)
        except RuntimeError:
            raise PlansError(f"trainer {name!r} not found by nnU-Net: check -tr (or nnUNet_extTrainer)") from None

    out = [("nnU-Net default (nnUNetTrainer)", nnUNetTrainer, None)]
    for name in trainers:
        out.append((name, find(name), None))
    for fold_dir in pruned_folds:
        run = runs.TrainedFold.open(fold_dir)
        if (run.plans, run.configuration) != (plans, configuration):
            raise PlansError(f"{fold_dir} was trained on {run.plans} {run.configuration}: measure it with "
                             f"-p {run.plans} -c {run.configuration}")
        weights = run.weights("checkpoint_final.pth")
        out.append((f"{run.trainer} {run.path.name} (as trained)", find(run.trainer), weights))
    return out


@dataclass
class Setting:
    """What a network is measured on: the plans' configuration, its patch, batch and loss."""
    plans_manager: object
    configuration_manager: object
    dataset_json: dict
    folder: str
    in_ch: int
    out_ch: int
    loss: torch.nn.Module
    patch: List[int]
    batch: int
    case_shape: List[int]

    def build(self, cls: type, deep_supervision: bool, weights: Optional[dict] = None) -> torch.nn.Module:
        net = cls.build_network_architecture(self.plans_manager, self.configuration_manager, self.in_ch,
                                             self.out_ch, enable_deep_supervision=deep_supervision)
        if weights is not None:
            net.load_state_dict(weights)
        return net


def setting(dataset: str, configuration: str, plans: str) -> Setting:
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder, plans_dict, dataset_json = load_plans(dataset, plans)
    pm = PlansManager(plans_dict)
    if configuration not in pm.available_configurations:
        raise PlansError(f"configuration {configuration!r} not in {plans} "
                         f"(has: {', '.join(pm.available_configurations)})")
    cm = pm.get_configuration(configuration)
    lm = pm.get_label_manager(dataset_json)
    return Setting(pm, cm, dataset_json, folder, determine_num_input_channels(pm, cm, dataset_json),
                   lm.num_segmentation_heads, _loss(cm, lm), list(cm.patch_size), cm.batch_size,
                   [int(round(v)) for v in cm.configuration["median_image_size_in_voxels"]])


def report(dataset: str, configuration: str, plans: str, trainers: Sequence[str] = (),
           pruned_folds: Sequence[str] = (), device: str = "cpu",
           step_repeats: int = measure.STEP_REPEATS, predict_repeats: int = measure.PREDICT_REPEATS,
           cpu_bf16: bool = False) -> Tuple[List[measure.Measurement], dict]:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    st = setting(dataset, configuration, plans)
    dev = torch.device(device)

    def predictor(net):
        p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                            perform_everything_on_device=dev.type == "cuda", device=dev, allow_tqdm=False)
        p.manual_initialization(net, st.plans_manager, st.configuration_manager, None, st.dataset_json,
                                "nnUNetTrainer", None)
        return p

    builds = [(label, lambda ds, cls=cls, weights=weights: st.build(cls, ds, weights))
              for label, cls, weights in candidates(trainers, pruned_folds, plans, configuration)]
    results = measure.measure(builds, st.loss, predictor, st.patch, st.batch, st.case_shape, st.in_ch, st.out_ch,
                              dev, step_repeats, predict_repeats, cpu_bf16)
    meta = {"dataset": os.path.basename(st.folder), "plans": plans, "configuration": configuration,
            "patch_size": st.patch, "batch_size": st.batch, "case_shape": st.case_shape,
            "device": device, "torch_threads": torch.get_num_threads(), "mirroring": False,
            "train_step_precision": "bf16 autocast" if cpu_bf16 else "fp32",
            "step_repeats": step_repeats, "predict_repeats": predict_repeats}
    return results, meta


def write(results: List[measure.Measurement], meta: dict, out_prefix: str) -> Tuple[str, str]:
    from nnunet_lean.jsonio import write_json_atomically, write_text_atomically
    from nnunet_lean.tables import markdown_table
    base = results[0]
    table = markdown_table([r.as_row(base) for r in results])
    header = (f"{meta['dataset']} / {meta['plans']} / {meta['configuration']}: patch {meta['patch_size']}, "
              f"batch {meta['batch_size']}, case {meta['case_shape']}, {meta['device']} "
              f"({meta['torch_threads']} threads), training steps in "
              f"{meta.get('train_step_precision', 'fp32')}, prediction fp32 without mirroring; ratios are to the first row")
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
    write_text_atomically(header + "\n\n" + table + "\n", out_prefix + ".md")
    write_json_atomically({"meta": meta, "results": [r.as_json(base) for r in results]}, out_prefix + ".json",
                          indent=1)
    return header + "\n\n" + table, out_prefix + ".json"
