"""nnunet-lean planners, installed as nnunetv2.experiment_planning.experiment_planners.lean so that
the stock ``nnUNetv2_plan_experiment -pl`` finds them (see setup.py)."""
