"""Lean planners run through nnU-Net's own planning entry points."""
import json
import math
import shutil

import pytest

from conftest import HIPPO_ID, load_json, side_by_side

LARGE_ID = 502
PRESETS = ["ExperimentPlanner", "nnUNetPlannerResEncM",  # stock, then lean
           "LeanPlanner", "LeanPlannerNf16", "LeanPlannerNf64", "LeanMemPlanner", "LeanResEncMPlanner"]


@pytest.fixture(scope="module")
def planned(hippo):
    """Dataset 502: dataset 501's files with a fingerprint claiming 256³ images, so nnU-Net's
    VRAM estimate (not the image size) limits the patch. Planning reads only the fingerprint."""
    src = hippo.dataset_dir(HIPPO_ID, "raw")
    shutil.copytree(src, hippo.raw / "Dataset502_LargeFingerprint")
    fingerprint = load_json(hippo.dataset_dir(HIPPO_ID) / "dataset_fingerprint.json")
    fingerprint["shapes_after_crop"] = [[256, 256, 256]] * len(fingerprint["shapes_after_crop"])
    (hippo.pre / "Dataset502_LargeFingerprint").mkdir()
    (hippo.pre / "Dataset502_LargeFingerprint" / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    # the stock CLI for one preset, and nnU-Net's own plan_experiments (what that CLI calls, same lookup by
    # name) for the rest. Planning is single-threaded Python, so two processes run side by side (61 -> 37 s).
    # The stock presets first: a lean preset reads their plans (to share their data) or replans them in memory.
    def plan(presets):
        return hippo.python("from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments\n"
                            f"for p in {presets!r}: plan_experiments([{LARGE_ID}], p)")

    stock, lean = PRESETS[:2], PRESETS[2:]
    cli = ["nnUNetv2_plan_experiment", "-d", str(LARGE_ID), "-pl", "LeanPlannerNf8"]
    side_by_side(lambda: plan(stock[:1]), lambda: plan(stock[1:]))
    side_by_side(lambda: (hippo.run(cli), plan(lean[:2])), lambda: plan(lean[2:]))
    folder = hippo.dataset_dir(LARGE_ID)
    return lambda name: load_json(folder / f"{name}.json")


def widths(plans, config):
    return plans["configurations"][config]["architecture"]["arch_kwargs"]["features_per_stage"]


def test_lean_planner_keeps_default_patch_batch_and_data(planned):
    default, lean = planned("nnUNetPlans"), planned("nnUNetLeanPlans")
    assert lean["plans_name"] == "nnUNetLeanPlans"
    assert set(lean["configurations"]) == set(default["configurations"])
    for config in ("2d", "3d_fullres", "3d_lowres"):
        d, l = default["configurations"][config], lean["configurations"][config]
        assert widths(default, config)[0] == 32 and len(set(widths(default, config))) > 1
        assert widths(lean, config) == [32] * len(widths(default, config))
        assert (l["patch_size"], l["batch_size"]) == (d["patch_size"], d["batch_size"])
        assert l["data_identifier"] == d["data_identifier"] == f"nnUNetPlans_{config}"
        assert l.get("spacing") == d.get("spacing")
        d_arch = dict(d["architecture"]["arch_kwargs"], features_per_stage=None)
        l_arch = dict(l["architecture"]["arch_kwargs"], features_per_stage=None)
        assert d_arch == l_arch  # only the widths differ


@pytest.mark.parametrize("planner_plans, nf", [("nnUNetLeanNf8Plans", 8), ("nnUNetLeanNf16Plans", 16),
                                               ("nnUNetLeanNf64Plans", 64)])
def test_nf_presets(planned, planner_plans, nf):
    plans, default = planned(planner_plans), planned("nnUNetPlans")
    for config in ("2d", "3d_fullres"):
        assert set(widths(plans, config)) == {nf}
        assert plans["configurations"][config]["patch_size"] == default["configurations"][config]["patch_size"]


def test_memory_aware_preset_lets_the_lean_net_buy_a_larger_batch_or_patch(planned):
    mem, default = planned("nnUNetLeanMemPlans"), planned("nnUNetPlans")
    m2, d2 = mem["configurations"]["2d"], default["configurations"]["2d"]
    m3, d3 = mem["configurations"]["3d_fullres"], default["configurations"]["3d_fullres"]
    assert set(widths(mem, "2d")) == set(widths(mem, "3d_fullres")) == {32}
    assert m2["patch_size"] == d2["patch_size"] and m2["batch_size"] > d2["batch_size"]
    assert math.prod(m3["patch_size"]) > math.prod(d3["patch_size"])
    assert m3["data_identifier"] == "nnUNetPlans_3d_fullres"


def test_lean_residual_encoder_preset(planned):
    resenc, lean = planned("nnUNetResEncUNetMPlans"), planned("nnUNetLeanResEncMPlans")
    for config in ("2d", "3d_fullres"):
        r, l = resenc["configurations"][config], lean["configurations"][config]
        assert l["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
        assert set(widths(lean, config)) == {32} and len(set(widths(resenc, config))) > 1
        assert (l["patch_size"], l["batch_size"]) == (r["patch_size"], r["batch_size"])
        assert l["data_identifier"] == f"nnUNetPlans_{config}"


def test_our_plan_command_for_editable_installs(hippo, planned):
    hippo.run(["nnunet_lean", "plan", "-d", str(LARGE_ID), "-pl", "LeanResEncLPlanner"])
    plans = planned("nnUNetLeanResEncLPlans")
    assert set(widths(plans, "3d_fullres")) == {32}
    proc = hippo.run(["nnunet_lean", "plan", "-d", str(LARGE_ID), "-pl", "NoSuchPlanner"], check=False)
    assert proc.returncode == 2 and "unknown planner 'NoSuchPlanner'" in proc.stderr


def test_a_lean_lowres_at_another_gpu_target_gets_its_own_data(planned, hippo):
    """-gpu_memory_target changes the lowres spacing (through the patch size), not the fullres data."""
    hippo.run(["nnUNetv2_plan_experiment", "-d", str(LARGE_ID), "-pl", "LeanPlanner", "-gpu_memory_target", "3",
               "-overwrite_plans_name", "nnUNetLeanPlans3G"])
    small, default = planned("nnUNetLeanPlans3G")["configurations"], planned("nnUNetPlans")["configurations"]
    assert small["3d_fullres"]["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert small["3d_lowres"]["spacing"] != default["3d_lowres"]["spacing"]
    assert small["3d_lowres"]["data_identifier"] == "nnUNetLeanPlans3G_3d_lowres"
