"""Re-exports nnunet-lean's planners where ``nnUNetv2_plan_experiment -pl`` searches.

Installed (non-editable) as ``nnunetv2.experiment_planning.experiment_planners.lean.nnunet_lean_planners``.
nnU-Net has no search path for planners: with an editable install use ``nnunet_lean plan``.
"""
from nnunet_lean.planning import (  # noqa: F401
    LeanPlanner, LeanPlannerNf8, LeanPlannerNf16, LeanPlannerNf64, LeanMemPlanner,
    LeanResEncMPlanner, LeanResEncLPlanner, LeanResEncXLPlanner)
