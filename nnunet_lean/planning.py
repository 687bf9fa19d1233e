"""Experiment planners that write lean (constant-width) plans.

Two ways to plan a lean network:

* keep nnU-Net's patch and batch size (``LeanPlanner``, ``LeanPlannerNf*``, ``LeanResEnc*Planner``):
  topology, patch and batch are planned exactly as the source planner would, with its default
  widths; only ``features_per_stage`` is then made constant. Results compare one-to-one with
  the source plans, and the source plans' preprocessed data is reused.
* memory-aware (``LeanMemPlanner``): nnU-Net's VRAM estimate sees the lean network itself, so
  the same GPU target buys a larger patch or batch.

Presets follow nnU-Net's ResEnc M/L/XL planners: each overrides ``__init__`` only.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
    nnUNetPlannerResEncL, nnUNetPlannerResEncM, nnUNetPlannerResEncXL)

from nnunet_lean import architecture, widths

Spacing = Optional[Union[List[float], Tuple[float, ...]]]


class LeanPlanning:
    """Mixin for an nnU-Net planner: make every configuration's widths constant.

    Attributes (set in ``__init__`` by each preset):
      lean_nf: the constant width.
      lowres_data_plans: the plans name whose ``3d_lowres`` preprocessed data equals ours
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
        # Same spacing and normalisation as nnUNetPlans: share its preprocessed 2d/3d_fullres data.
        if configuration_name in ("2d", "3d_fullres"):
            return "nnUNetPlans_" + configuration_name
        return f"{self.lowres_data_plans}_{configuration_name}"


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
