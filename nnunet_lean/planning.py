"""Experiment planners that write lean (constant-width) plans.

Two ways to plan a lean network:

* keep nnU-Net's patch and batch size (``LeanPlanner``, ``LeanPlannerNf*``, ``LeanResEnc*Planner``):
  topology, patch and batch are planned exactly as the source planner would, with its default
  widths; only ``features_per_stage`` is then made constant. Results compare one-to-one with
  the source plans, and the source plans' preprocessed data is reused when it is the same data.
* memory-aware (``LeanMemPlanner``): nnU-Net's VRAM estimate sees the lean network itself, so
  the same GPU target buys a larger patch or batch.

Presets follow nnU-Net's ResEnc M/L/XL planners: each overrides ``__init__`` only.

Data identifiers (which preprocessed folder a configuration reads, and which one preprocessing
deletes and rewrites): a lean configuration shares another plans' folder only when everything that
decides the preprocessed arrays (:func:`preprocessing_signature`) equals that plans' configuration:
the plans file on disk, or else what the unflagged source planner would plan. Otherwise (e.g.
``-overwrite_target_spacing``, another ``-preprocessor_name``, a lowres at another GPU target) it
gets its own, ``<plans name>_<configuration>``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from typing import Dict, List, Optional, Tuple, Type, Union

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
    nnUNetPlannerResEncL, nnUNetPlannerResEncM, nnUNetPlannerResEncXL)

from nnunetv2.paths import nnUNet_preprocessed

from nnunet_lean import architecture, widths

Spacing = Optional[Union[List[float], Tuple[float, ...]]]

# what nnU-Net's DefaultPreprocessor reads to produce a configuration's arrays
PREPROCESSING_KEYS = ("spacing", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data",
                      "resampling_fn_data_kwargs", "resampling_fn_seg", "resampling_fn_seg_kwargs",
                      "preprocessor_name")
PLANS_PREPROCESSING_KEYS = ("transpose_forward", "image_reader_writer",
                            "foreground_intensity_properties_per_channel")
# the stock planners whose data a lean preset may share, by the plans name they write
SOURCE_PLANNERS: Dict[str, Type[ExperimentPlanner]] = {
    "nnUNetPlans": ExperimentPlanner, "nnUNetResEncUNetMPlans": nnUNetPlannerResEncM,
    "nnUNetResEncUNetLPlans": nnUNetPlannerResEncL, "nnUNetResEncUNetXLPlans": nnUNetPlannerResEncXL}


def preprocessing_signature(plans: dict, configuration: str) -> dict:
    """Everything that decides the preprocessed arrays of ``configuration`` (JSON-normalised, so an
    in-memory plan compares equal to its saved file)."""
    from nnunetv2.utilities.json_export import recursive_fix_for_json_export
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    conf = PlansManager(plans).get_configuration(configuration).configuration
    sig = {"plans": {k: plans.get(k) for k in PLANS_PREPROCESSING_KEYS},
           "configuration": {k: conf.get(k) for k in PREPROCESSING_KEYS}}
    sig = copy.deepcopy(sig)
    recursive_fix_for_json_export(sig)
    return json.loads(json.dumps(sig))


class LeanPlanning:
    """Mixin for an nnU-Net planner: make every configuration's widths constant.

    Attributes (set in ``__init__`` by each preset):
      lean_nf: the constant width.
      lowres_data_plans: the plans name whose ``3d_lowres`` preprocessed data ours may share
        (the source planner's name when patch sizes are kept, our own otherwise).
    """
    lean_nf: int = 32
    lowres_data_plans: str = "nnUNetPlans"

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        plan = super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                   approximate_n_voxels_dataset, _cache)
        arch = plan["architecture"]
        plan["architecture"] = architecture.with_widths(
            arch, widths.lean(int(arch["arch_kwargs"]["n_stages"]), self.lean_nf))
        return plan

    def generate_data_identifier(self, configuration_name: str) -> str:
        # our own folder; save_plans switches to a shared one where the data is provably the same
        return f"{self.plans_identifier}_{configuration_name}"

    def data_source(self, configuration_name: str) -> str:
        """The plans whose preprocessed data this configuration may share (nnU-Net's ResEnc presets
        share nnUNetPlans' 2d/3d_fullres data too)."""
        return "nnUNetPlans" if configuration_name in ("2d", "3d_fullres") else self.lowres_data_plans

    def reference_plans(self, source: str) -> Optional[dict]:
        """The plans ``source`` as on disk, else as its unflagged stock planner would write them
        (planned in memory, nothing saved); None for a source we cannot plan."""
        path = os.path.join(nnUNet_preprocessed, self.dataset_name, source + ".json")
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        if source not in SOURCE_PLANNERS:
            return None
        planner = SOURCE_PLANNERS[source](self.dataset_name)
        planner.save_plans = lambda plans: None
        with contextlib.redirect_stdout(io.StringIO()):  # it prints every configuration
            return planner.plan_experiment()

    def save_plans(self, plans: dict) -> None:
        references: Dict[str, Optional[dict]] = {}
        for name, conf in plans["configurations"].items():
            source = self.data_source(name)
            if "data_identifier" not in conf or source == self.plans_identifier:
                continue
            if source not in references:
                references[source] = self.reference_plans(source)
            ref = references[source]
            if (ref is not None and "data_identifier" in ref["configurations"].get(name, {})
                    and preprocessing_signature(ref, name) == preprocessing_signature(plans, name)):
                conf["data_identifier"] = ref["configurations"][name]["data_identifier"]
        super().save_plans(plans)


class LeanPlanner(LeanPlanning, ExperimentPlanner):
    """nnUNetLeanPlans: nnU-Net's default plans with a constant width of 32 (nnU-Net's base)."""

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetLeanPlans",
                 overwrite_target_spacing: Spacing = None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.lean_nf = self.UNet_base_num_features
        self.lowres_data_plans = "nnUNetPlans"


class LeanPlannerNf8(LeanPlanner):
    """nnUNetLeanNf8Plans: as LeanPlanner, Nf = 8 (the paper's best LUnet)."""

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetLeanNf8Plans",
                 overwrite_target_spacing: Spacing = None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.lean_nf = 8


class LeanPlannerNf16(LeanPlanner):
    """nnUNetLeanNf16Plans: as LeanPlanner, Nf = 16."""

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetLeanNf16Plans",
                 overwrite_target_spacing: Spacing = None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.lean_nf = 16


class LeanPlannerNf64(LeanPlanner):
    """nnUNetLeanNf64Plans: as LeanPlanner, Nf = 64."""

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetLeanNf64Plans",
                 overwrite_target_spacing: Spacing = None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.lean_nf = 64


class LeanMemPlanner(LeanPlanner):
    """nnUNetLeanMemPlans: Nf = 32, and nnU-Net's VRAM estimate of the LEAN net sets patch/batch."""

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetLeanMemPlans",
                 overwrite_target_spacing: Spacing = None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.lean_nf = 32
        self.UNet_base_num_features = self.UNet_max_features_2d = self.UNet_max_features_3d = self.lean_nf
        self.lowres_data_plans = self.plans_identifier  # lowres spacing follows the new patch size


class LeanResEncMPlanner(LeanPlanning, nnUNetPlannerResEncM):
    """nnUNetLeanResEncMPlans: nnU-Net's ResEnc M plans with a constant width of 32."""

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetLeanResEncMPlans",
                 overwrite_target_spacing: Spacing = None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.lean_nf = self.UNet_base_num_features
        self.lowres_data_plans = "nnUNetResEncUNetMPlans"


class LeanResEncLPlanner(LeanPlanning, nnUNetPlannerResEncL):
    """nnUNetLeanResEncLPlans: nnU-Net's ResEnc L plans (24 GB target) with a constant width of 32."""

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 24,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetLeanResEncLPlans",
                 overwrite_target_spacing: Spacing = None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.lean_nf = self.UNet_base_num_features
        self.lowres_data_plans = "nnUNetResEncUNetLPlans"


class LeanResEncXLPlanner(LeanPlanning, nnUNetPlannerResEncXL):
    """nnUNetLeanResEncXLPlans: nnU-Net's ResEnc XL plans (40 GB target) with a constant width of 32."""

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 40,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetLeanResEncXLPlans",
                 overwrite_target_spacing: Spacing = None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.lean_nf = self.UNet_base_num_features
        self.lowres_data_plans = "nnUNetResEncUNetXLPlans"
